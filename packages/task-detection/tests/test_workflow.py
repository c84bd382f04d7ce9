"""End to end on a tiny synthetic set: train -> evaluate (.tlk and .onnx) -> inference (images, video) ->
prune (heads kept) -> retrain the pruned graph -> export (ONNX equals MXNet on the raw heads, DeepStream
config) -> calibration tensorfile; and the commands' bad-input errors."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from detection_synth import CLASSES, tiny_spec, write_synthetic_kitti, write_synthetic_records
from rich.console import Console

from tlkit.errors import DataError, ModelFileError, SpecError, TlkitError
from tlkit.testing import make_context


def _ctx(command, **kw):
    return make_context("detection", command, gpus=0, console=Console(width=120, highlight=False), **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tlkit_detection.train import run as train_run

    tmp = tmp_path_factory.mktemp("wf")
    manifest = write_synthetic_records(tmp, n=16, val_split=25)
    cfg = tiny_spec(manifest, **{"train_config.n_epochs": 2})
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp / "results"))
    return {"tmp": tmp, "manifest": manifest, "cfg": cfg, "out": out, "model": Path(out["model"])}


def test_train_writes_model_status_and_validation_kpi(trained):
    res = trained["tmp"] / "results"
    out = trained["out"]
    assert trained["model"].is_file() and trained["model"].suffix == ".tlk"
    assert out["mean average precision"] == pytest.approx(np.mean([out[f"AP {c}"] for c in CLASSES]))
    assert out["validation cost"] > 0
    lines = [json.loads(x) for x in (res / "status.json").read_text().splitlines() if x.strip()]
    assert lines[-1]["status"] == "SUCCESS"
    assert lines[-1]["kpi"]["mean average precision"] == pytest.approx(out["mean average precision"])
    rows = (res / "training.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    assert "mean average precision" in rows[0]
    from tlkit.model_io import load_model

    ckpt = load_model(res / "weights" / "model_epoch_002.tlk").meta["train_state"]
    weights = np.array(ckpt["task_state"]["objective_weights"])  # auto-weighting state, for an exact resume
    assert weights.shape == (len(CLASSES), 2) and np.all(weights > 0)


def test_evaluate_tlk_and_onnx_agree_and_write_reports(trained, tmp_path):
    from tlkit.export.command import run as export_run
    from tlkit_detection.evaluate import run as eval_run

    cfg = trained["cfg"]
    r1 = eval_run(
        _ctx(
            "evaluate",
            spec=cfg,
            model=trained["model"],
            results_dir=tmp_path / "e1",
            options={"kitti_difficulty": True},
        )
    )
    m1 = r1.metrics
    assert set(m1["average_precision"]) == set(CLASSES)
    t = m1["inference_time"]
    assert t["unit"] == "ms per image" and t["median_ms"] > 0 and t["median_ms_batch_1"] > 0
    assert m1["backend"] == "mxnet"
    assert (
        t["batch_size"] == cfg.train_config.batch_size_per_gpu and t["frames_at_batch_1"] == 4
    )  # the 4 validation frames
    assert "kitti" in m1 and set(m1["coco"]["per_class_AP"]) == set(CLASSES)
    # evaluate's one result shape: status.json's KPI, the files written, evaluation.json's numbers
    status = json.loads((tmp_path / "e1" / "status.json").read_text().splitlines()[-1])
    assert r1.kpi == status["kpi"] == {"mean average precision": pytest.approx(m1["mean_average_precision"])}
    assert m1 == json.loads((tmp_path / "e1" / "evaluation.json").read_text())
    assert set(r1.artifacts) == {"evaluation.json", *(f"pr_curve_{c}.png" for c in CLASSES)}
    assert all(Path(p).is_file() and Path(p).parent == tmp_path / "e1" for p in r1.artifacts.values())
    onnx = tmp_path / "model.onnx"
    export_run(
        _ctx(
            "export", model=trained["model"], output=onnx, results_dir=tmp_path / "ds", options={"gen_ds_config": True}
        )
    )
    assert onnx.is_file()
    r2 = eval_run(_ctx("evaluate", spec=cfg, model=onnx, options={}))
    assert r2.metrics["backend"] != "mxnet" and r2.artifacts == {}  # no -r: nothing written
    for c in CLASSES:
        assert r2.metrics["num_predictions"][c] == m1["num_predictions"][c]
        assert r2.metrics["average_precision"][c] == pytest.approx(m1["average_precision"][c], abs=1e-6)
    configs = list((tmp_path).rglob("nvinfer_config.txt"))
    assert configs, "export --gen_ds_config wrote no DeepStream config"
    text = configs[0].read_text()
    assert "network-type=0" in text and "cluster-mode=1" in text
    assert "output-blob-names=output_cov;output_bbox" in text and "num-detected-classes=2" in text


def test_onnx_raw_heads_match_mxnet(trained, tmp_path):
    from tlkit.model_io import load_net
    from tlkit.testing.export import assert_onnx_matches

    net, meta = load_net(trained["model"])
    assert_onnx_matches(net, tuple(meta["input_shape"]), meta=meta, out_dir=tmp_path, batch_sizes=(1, 2))


def test_inference_on_images_and_video(trained, tmp_path):
    import cv2

    from tlkit_detection.inference import run as infer_run

    imgs = write_synthetic_kitti(tmp_path / "new", n=3, seed=9) / "images"
    res = infer_run(
        _ctx("inference", model=trained["model"], results_dir=tmp_path / "inf", options={"image_dir": imgs})
    )
    assert res["images"] == 3
    labels = sorted((tmp_path / "inf" / "labels").glob("*.txt"))
    assert [p.stem for p in labels] == ["0000", "0001", "0002"]
    for p in labels:
        for line in p.read_text().splitlines():
            fields = line.split()
            assert len(fields) == 16 and fields[0] in CLASSES and float(fields[15]) > 0
    annotated = sorted((tmp_path / "inf" / "images_annotated").glob("*.png"))
    assert len(annotated) == 3 and cv2.imread(str(annotated[0])).shape == (96, 128, 3)

    video = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 96))
    for p in sorted(imgs.glob("*.png")):
        vw.write(cv2.imread(str(p)))
    vw.release()
    res = infer_run(_ctx("inference", model=trained["model"], results_dir=tmp_path / "vid", options={"image": video}))
    assert res["frames"] == 3
    cap = cv2.VideoCapture(res["video"])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    assert len(json.loads(Path(res["detections_json"]).read_text())["frames"]) == 3


def test_inference_on_a_list_and_sub_folders_keeps_names_apart(trained, tmp_path):
    """A .txt list (paths relative to it) and a folder whose sub-folders hold images of the same name: every
    image gets its own label file and overlay, below the same sub-folder."""
    import shutil

    from tlkit_detection.inference import run as infer_run

    imgs = write_synthetic_kitti(tmp_path / "new", n=3, seed=9) / "images"
    (tmp_path / "d" / "cam2").mkdir(parents=True)
    for p in sorted(imgs.glob("*.png"))[:2]:
        shutil.copy(p, tmp_path / "d" / p.name)
        shutil.copy(p, tmp_path / "d" / "cam2" / p.name)

    def written(out):  # label files below <out>/labels
        return sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.txt"))

    res = infer_run(
        _ctx("inference", model=trained["model"], results_dir=tmp_path / "inf", options={"image_dir": tmp_path / "d"})
    )
    assert res["images"] == 4 and written(tmp_path / "inf") == [
        "0000.txt",
        "0001.txt",
        "cam2/0000.txt",
        "cam2/0001.txt",
    ]
    labels = tmp_path / "inf" / "labels"
    assert (labels / "0000.txt").read_text() == (labels / "cam2" / "0000.txt").read_text()
    assert (tmp_path / "inf" / "images_annotated" / "cam2" / "0001.png").is_file()
    listed = tmp_path / "list.txt"
    listed.write_text("# two of them\nnew/images/0002.png\nd/cam2/0001.png\n")
    res = infer_run(_ctx("inference", model=trained["model"], results_dir=tmp_path / "lst", options={"image": listed}))
    assert res["images"] == 2 and written(tmp_path / "lst") == ["d/cam2/0001.txt", "new/images/0002.txt"]


def test_inference_uses_the_models_post_processing_unless_the_spec_sets_one(trained):
    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.predict import load_detector

    saved = load_detector(trained["model"]).params
    assert saved == load_detector(trained["model"], trained["cfg"]).params
    assert saved["blue"].minimum_bounding_box_height == 4  # tiny_spec's, not the default 20
    # the CLI's spec without -e: all defaults, no postprocessing_config set -> the model's
    assert load_detector(trained["model"], DetectionConfig()).params == saved
    spec = DetectionConfig.model_validate({"postprocessing_config": {"default": {"clustering_algorithm": "nms"}}})
    own = load_detector(trained["model"], spec).params["blue"]
    assert own.clustering_algorithm == "nms" and own.minimum_bounding_box_height == 20


def test_inference_confidence_threshold_and_coco_csv_outputs(trained, tmp_path):
    import csv

    from pycocotools.coco import COCO

    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.inference import run as infer_run

    imgs = write_synthetic_kitti(tmp_path / "new", n=4, seed=11) / "images"
    dump = {"coco_dump": True, "csv_dump": True, "disable_overlay": True}
    # a 2-epoch model: post-processing that keeps every cell, so there are boxes to write
    loose = {
        "default": {
            "clustering_algorithm": "nms",
            "coverage_threshold": 0.0,
            "nms_confidence_threshold": 0.0,
            "minimum_bounding_box_height": 0,
        }
    }
    everything = infer_run(
        _ctx(
            "inference",
            model=trained["model"],
            results_dir=tmp_path / "all",
            options={"image_dir": imgs},
            spec=DetectionConfig.model_validate({"inference_config": dump, "postprocessing_config": loose}),
        )
    )
    dets = json.loads((tmp_path / "all" / "detections_coco.json").read_text())
    rows = list(csv.DictReader((tmp_path / "all" / "detections.csv").open()))
    assert len(dets) == len(rows) == sum(everything["detections"].values()) > 0
    ids = json.loads((tmp_path / "all" / "detections_coco_ids.json").read_text())
    assert [c["name"] for c in ids["categories"]] == list(CLASSES) and {d["image_id"] for d in dets} <= {
        0,
        1,
        2,
        3,
    }  # 0000.png..
    gt = COCO()
    gt.dataset = {"images": ids["images"], "annotations": [], "categories": ids["categories"]}
    gt.createIndex()
    assert len(gt.loadRes(str(tmp_path / "all" / "detections_coco.json")).getAnnIds()) == len(dets)
    kitti = [
        line.split() for p in sorted((tmp_path / "all" / "labels").glob("*.txt")) for line in p.read_text().splitlines()
    ]
    assert sorted(float(r["confidence"]) for r in rows) == pytest.approx(sorted(float(k[15]) for k in kitti), abs=1e-6)
    cut = float(np.median([d["score"] for d in dets]))
    spec = DetectionConfig.model_validate(
        {"inference_config": {**dump, "confidence_threshold": cut}, "postprocessing_config": loose}
    )
    fewer = infer_run(
        _ctx("inference", model=trained["model"], results_dir=tmp_path / "cut", options={"image_dir": imgs}, spec=spec)
    )
    kept = json.loads((tmp_path / "cut" / "detections_coco.json").read_text())
    assert sorted(d["score"] for d in kept) == sorted(d["score"] for d in dets if d["score"] >= cut)
    assert sum(fewer["detections"].values()) == len(kept) < len(dets)


def test_prune_keeps_heads_and_pruned_graph_retrains(trained, tmp_path):
    from tlkit.model_io import load_net, read_meta
    from tlkit.pruning.command import run as prune_run
    from tlkit.testing.pruning import assert_prune_equivalent
    from tlkit_detection.model import BBOX_NODE, COV_NODE
    from tlkit_detection.train import run as train_run

    net, meta = load_net(trained["model"])
    assert_prune_equivalent(
        net,
        (3, 64, 64),
        threshold=0.5,
        excluded_layers=[COV_NODE, BBOX_NODE],
        compare_nodes=[f"{COV_NODE}_fwd", f"{BBOX_NODE}_fwd"],
    )
    pruned = tmp_path / "pruned.tlk"
    prune_run(
        _ctx(
            "prune",
            model=trained["model"],
            output=pruned,
            results_dir=tmp_path,
            options={"target_ratio": 0.5, "min_num_filters": 8},
        )
    )
    pm = read_meta(pruned)
    assert pm["kind"] == "graph" and pm["pruning"]["params_after"] < pm["pruning"]["params_before"]
    pnet, _ = load_net(pruned)
    import mxnet as mx

    cov, bbox = pnet(mx.nd.zeros((1, 3, 96, 128)))
    assert cov.shape == (1, 2, 6, 8) and bbox.shape == (1, 8, 6, 8)
    # retrain the pruned graph (TLT: load_graph) for one epoch; it stays a graph model
    # with distillation from the unpruned model (coverage / bbox maps) and the retrain recipe's start rows
    cfg = tiny_spec(
        trained["manifest"],
        **{
            "train_config.pretrained_model_path": str(pruned),
            "train_config.load_graph": True,
            "train_config.distillation.teacher": str(trained["model"]),
        },
    )
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "retrain"))
    assert read_meta(out["model"])["kind"] == "graph"
    assert read_meta(out["model"])["classes"] == list(CLASSES)
    from tlkit.types import ModelMeta

    meta = read_meta(out["model"])  # a DetectNet_v2 pruned, retrained with distillation
    assert set(meta) <= set(ModelMeta.model_fields), set(meta) - set(ModelMeta.model_fields)  # every key documented
    rows = list(csv.DictReader((tmp_path / "retrain" / "training.csv").read_text().splitlines()))
    assert [r["stage"] for r in rows[:2]] == ["pruned", "bn_reestimated"] and rows[0]["mean average precision"] != ""
    assert float(rows[-1]["teacher_s"]) > 0

    # TLT's recipe ends with the pruned model retrained quantization-aware, exported int8 without calibration
    from tlkit.testing.qat import assert_qat_export_reproduces

    cfg = tiny_spec(
        trained["manifest"],
        **{
            "train_config.pretrained_model_path": str(pruned),
            "train_config.load_graph": True,
            "train_config.enable_qat": True,
        },
    )
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "qat"))
    assert read_meta(out["model"])["qat"]["activations_quantized"] >= 8
    assert out["mean average precision"] == pytest.approx(np.mean([out[f"AP {c}"] for c in CLASSES]))
    assert_qat_export_reproduces(out["model"], out_dir=tmp_path)


def test_compress_runs_on_detectnet(trained, tmp_path):
    """The generic compress loop through detection's train_job: baseline mAP on the validation fold, one pruning
    step retrained with distillation, the report."""
    from tlkit.compress import run as compress_run

    out = compress_run(
        _ctx(
            "compress",
            spec=trained["cfg"],
            model=trained["model"],
            results_dir=tmp_path / "c",
            options={
                "max_accuracy_drop": 100.0,
                "target_ratio": 0.5,
                "steps": 1,
                "retrain_epochs": 1,
                "min_num_filters": 8,
                "no_latency": True,
            },
        )
    )
    state = json.loads((tmp_path / "c" / "compress.json").read_text())
    base, step = state["steps"]
    # the baseline is the trained model's mAP on the validation fold: what its training's last validation said
    assert base["kpi"] == "mean average precision"
    assert base["kpi_value"] == pytest.approx(trained["out"]["mean average precision"])
    assert step["params"] <= 0.5 * base["params"] and step["teacher_s"] > 0
    assert out["kept_step"] == 1 and (tmp_path / "c" / "compressed.tlk").is_file()


def test_detectnet_distillation_loss_is_lower_against_itself():
    import mxnet as mx

    from tlkit_detection.loss import ClassCost, DetectNetLoss

    loss = DetectNetLoss([ClassCost(), ClassCost()])
    rng = np.random.default_rng(0)
    cov = mx.nd.array(rng.uniform(0.01, 0.99, (2, 2, 3, 4)))
    bbox = mx.nd.array(rng.normal(size=(2, 8, 3, 4)))
    same = loss.distill((cov, bbox), (cov, bbox), 2.0).asnumpy()
    other = loss.distill((1 - cov, bbox + 1), (cov, bbox), 2.0).asnumpy()
    assert same.shape == (2,) and (other > same).all()
    assert loss._sums == []  # distillation never feeds the auto-weighting statistics


def test_calibration_tensorfile(trained, tmp_path):
    from tlkit.export.calibration import read_tensorfile, tensorfile_info
    from tlkit_detection.calibration import run as cal_run

    out = tmp_path / "cal.tensorfile"
    res = cal_run(
        _ctx(
            "calibration_tensorfile",
            spec=trained["cfg"],
            model=trained["model"],
            output=out,
            options={"max_batches": 2},
        )
    )
    assert res["count"] == 2
    count, shape = tensorfile_info(out)
    assert count == 2 and tuple(shape) == (4, 3, 96, 128)
    batch = next(read_tensorfile(out))
    # training preprocessing of a resnet (torch mode): roughly zero-centred, not raw pixels
    assert np.abs(batch).max() < 10 and abs(float(batch.mean())) < 3


def test_command_errors(trained, tmp_path):
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.inference import run as infer_run
    from tlkit_detection.train import run as train_run

    with pytest.raises(TlkitError, match="give the experiment spec with -e"):
        eval_run(_ctx("evaluate", model=trained["model"]))
    bare = tmp_path / "bare.yaml"
    bare.write_text("model_config: {arch: resnet, n_layers: 10}\n")
    with pytest.raises(TlkitError, match="bare.yaml: sets no dataset_config"):  # -e given: the spec is named
        eval_run(_ctx("evaluate", model=trained["model"], spec=bare))
    one = write_synthetic_kitti(tmp_path / "one", n=1, seed=1) / "images"
    with pytest.raises(ModelFileError, match="model file not found"):
        infer_run(_ctx("inference", model=tmp_path / "nope.tlk", results_dir=tmp_path, options={"image_dir": one}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        infer_run(
            _ctx(
                "inference",
                model=trained["model"],
                results_dir=tmp_path / "r",
                options={"image_dir": tmp_path / "empty"},
            )
        )
    bad = tmp_path / "bad.csv"
    bad.write_text("x")
    with pytest.raises(DataError, match="not an image, a folder of images, a .txt list of images or a video"):
        infer_run(_ctx("inference", model=trained["model"], results_dir=tmp_path / "r", options={"image": bad}))
    with pytest.raises(TlkitError, match="give exactly one of -i/--image, -d/--image_dir"):
        infer_run(
            _ctx(
                "inference",
                model=trained["model"],
                results_dir=tmp_path / "r",
                options={"image": bad, "image_dir": tmp_path},
            )
        )
    with pytest.raises(SpecError, match=r"is not a graph \(pruned\) model file"):
        cfg = tiny_spec(
            trained["manifest"],
            **{"train_config.pretrained_model_path": str(trained["model"]), "train_config.load_graph": True},
        )
        train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "t"))
    with pytest.raises(SpecError, match="takes input \\[3, 96, 128\\]"):
        from tlkit.pruning.command import prune_model_file

        pruned = tmp_path / "p.tlk"
        prune_model_file(trained["model"], pruned, target_ratio=0.5)
        cfg = tiny_spec(
            trained["manifest"],
            **{
                "train_config.pretrained_model_path": str(pruned),
                "train_config.load_graph": True,
                "augmentation_config.preprocessing.output_image_width": 64,
            },
        )
        train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "t2"))


def test_cli_train_evaluate_inference(tmp_path):
    """The same chain through `tlkit detection ...` (spec YAML with TLT section names, key=value overrides)."""
    import yaml

    from tlkit.testing.plugins import run_tlkit

    manifest = write_synthetic_records(tmp_path, n=8, val_split=25, seed=3)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "dataset_config": {"data_sources": [{"records_path": str(manifest)}], "validation_fold": 0},
                "model_config": {"arch": "resnet", "n_layers": 10},
                "augmentation_config": {"preprocessing": {"output_image_width": 128, "output_image_height": 96}},
                "postprocessing_config": {"default": {"minimum_bounding_box_height": 4}},
                "train_config": {"batch_size_per_gpu": 4, "n_epochs": 1, "reg_config": {"type": "none"}},
            }
        )
    )
    r = run_tlkit(
        [
            "detection",
            "train",
            "-e",
            str(spec),
            "-r",
            str(tmp_path / "res"),
            "--gpus",
            "0",
            "train_config.optimizer.type=adam",
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    model = tmp_path / "res" / "weights" / "model.tlk"
    assert model.is_file()
    r = run_tlkit(["detection", "evaluate", "-e", str(spec), "-m", str(model), "--gpus", "0"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Mean average_precision (in %)" in r.stdout and "COCO AP (pycocotools" in r.stdout
    assert "Median Inference Time: " in r.stdout and " ms per image at batch 4, " in r.stdout
    assert " ms at batch 1 (forward pass, mxnet)" in r.stdout
    r = run_tlkit(
        [
            "detection",
            "inference",
            "-m",
            str(model),
            "-i",
            str(tmp_path / "kitti" / "images"),
            "-r",
            str(tmp_path / "inf"),
            "--gpus",
            "0",
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((tmp_path / "inf" / "labels").glob("*.txt"))) == 8
    r = run_tlkit(["detection", "train", "-e", str(spec), "-r", str(tmp_path / "bad"), "model_config.arch=resnett"])
    assert r.returncode != 0 and "resnett" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_train_without_validation_split(tmp_path):
    from tlkit_detection.train import run as train_run

    manifest = write_synthetic_records(tmp_path, n=8, val_split=25, seed=5)
    cfg = tiny_spec(manifest, **{"dataset_config.validation_fold": None})
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "res"))
    assert Path(out["model"]).is_file() and "mean average precision" not in out and out["loss"] > 0


def _tiny_classifier_onnx(path):
    """An exported classifier (core's export, no classification package: task packages never import each other)."""
    import mxnet as mx
    from mxnet.gluon import nn

    from tlkit.export.onnx_export import export_onnx

    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(2))
    net.initialize(mx.init.Xavier())
    meta = {
        "task": "classification",
        "arch": "tiny",
        "classes": ["left", "right"],
        "input_shape": [3, 16, 16],
        "preprocessing": {"mode": "tf"},
    }
    return export_onnx(net, path, meta=meta)


def test_cascade_inference_with_a_secondary_classifier(trained, tmp_path):
    """detect -> crop as nvinfer does -> classify: both labels drawn and written (KITTI, CSV, JSON), latency."""
    import csv

    import cv2

    from tlkit.export.cascade import SecondaryClassifier
    from tlkit.images import read_rgb
    from tlkit_detection.inference import run as infer_run

    cls = _tiny_classifier_onnx(tmp_path / "cls.onnx")
    imgs = write_synthetic_kitti(tmp_path / "new", n=3, seed=9) / "images"
    opts = {
        "image_dir": imgs,
        "secondary": cls,
        "classifier_threshold": 0.0,
        "input_object_min_width": 4,
        "input_object_min_height": 4,
        "secondary_margin": 0.0,
        "operate_on_class_ids": None,
    }
    spec = trained["cfg"].model_copy(deep=True)
    pp = spec.postprocessing_config.default  # plenty of objects from a 2-epoch model
    pp.clustering_algorithm, pp.coverage_threshold, pp.nms_confidence_threshold = "nms", 0.0, 0.0
    pp.minimum_bounding_box_height = 4
    res = infer_run(_ctx("inference", model=trained["model"], spec=spec, results_dir=tmp_path / "c", options=opts))
    rows = list(csv.DictReader((tmp_path / "c" / "cascade.csv").read_text().splitlines()))
    assert rows, "the detector found nothing to classify"
    report = json.loads((tmp_path / "c" / "cascade.json").read_text())
    assert len(report["objects"]) == len(rows) and set(report["latency_ms"]) == {
        "detector_per_frame",
        "classifier_per_crop",
        "cascade_per_frame",
    }
    assert res["latency_ms"]["cascade_per_frame"] >= res["latency_ms"]["detector_per_frame"] > 0
    # the secondary labels are what the classifier gives on nvinfer's crop of each detected box
    sc = SecondaryClassifier(cls, min_width=4, min_height=4, threshold=0.0)
    for name in sorted({r["image"] for r in rows}):
        mine = [r for r in rows if r["image"] == name]
        boxes = [[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in mine]
        want = sc.classify(read_rgb(imgs / name), boxes)
        for r, w in zip(mine, want):
            assert r["class"] in CLASSES and r["secondary_label"] == (w.label or "")
            if w.probability is not None:
                assert float(r["secondary_probability"]) == pytest.approx(w.probability, abs=1e-4)
        kitti = (tmp_path / "c" / "labels_secondary" / f"{Path(name).stem}.txt").read_text().splitlines()
        assert sorted(line.split()[0] for line in kitti) == sorted(w.label for w in want if w.label)
    assert len(list((tmp_path / "c" / "labels").glob("*.txt"))) == 3
    assert cv2.imread(str(next((tmp_path / "c" / "images_annotated").glob("*.png")))) is not None
