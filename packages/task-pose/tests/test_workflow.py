"""End-to-end smoke on tiny synthetic data (64 px, 1 epoch): train -> evaluate (.tlk, .onnx) -> inference
(images, video) -> prune (heads unchanged, equivalent to the masked original) -> retrain the pruned graph ->
export (ONNX matches MXNet; --sdk_compatible_model; DeepStream config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tlkit.context import CommandContext
from tlkit.errors import DataError, TlkitError
from tlkit.testing import make_context

S = 64


def spec(tmp: Path, train: Path, val: Path, **model):
    from tlkit_pose.config import PoseConfig

    return PoseConfig.model_validate(
        {
            "dataloader": {"train_annotations": str(train), "val_annotations": str(val), "image_dims": [S, S, 3]},
            "pose_config": {"target_shape": [S // 8, S // 8]},
            "model": {"arch": "resnet18", "backbone_blocks": 3, "stages": 2, "stage_channels": 16, **model},
            "train_config": {
                "batch_size_per_gpu": 4,
                "n_epochs": 1,
                "optimizer": {"type": "adam"},
                "lr_config": {"type": "constant", "learning_rate": 1e-3},
                "max_checkpoints_to_keep": 1,
            },
        }
    )


def ctx(command: str, console: Console, **kw) -> CommandContext:
    return make_context("pose", command, console=console, gpus=0, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import mxnet as mx

    from tlkit_pose.synthetic import generate_dataset
    from tlkit_pose.train import train_model

    tmp = tmp_path_factory.mktemp("pose_wf")
    train = generate_dataset(tmp / "train", n_images=8, seed=3, size=(S, S), people=(1, 2), crowd_prob=0.3)
    val = generate_dataset(tmp / "val", n_images=3, seed=4, size=(S, S + 16), people=(1, 2))
    cfg = spec(tmp, train, val)
    res = train_model(cfg, tmp / "train_out", Console(quiet=True), [mx.cpu()])
    return {"tmp": tmp, "cfg": cfg, "res": res, "val": val, "train": train}


def test_train_writes_model_and_validates_ap(trained):
    res = trained["res"]
    assert res.model_path.is_file() and res.epochs_run == 1
    from tlkit.model_io import read_meta
    from tlkit.types import ModelMeta

    meta = read_meta(res.model_path)
    assert set(meta) <= set(ModelMeta.model_fields), set(meta) - set(ModelMeta.model_fields)  # every key documented
    row = res.history[-1]
    assert np.isfinite(row["loss"]) and row["loss"] > 0
    status = [json.loads(ln) for ln in (trained["tmp"] / "train_out" / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "SUCCESS"
    kpi = status[-1]["kpi"]
    assert kpi["AP"] == pytest.approx(row["AP"]) and kpi["AP50"] == pytest.approx(row["AP50"])
    # (that the AP is the model's COCO AP on the validation set: test_evaluate_tlk_and_onnx_agree)


def test_evaluate_tlk_and_onnx_agree(trained, tmp_path):
    from tlkit.testing.export import assert_onnx_matches
    from tlkit_pose.evaluate import run as evaluate_run
    from tlkit_pose.export import run as export_run

    c = Console(quiet=True)
    model = trained["res"].model_path
    assert_onnx_matches(model, batch_sizes=(1, 2), rtol=1e-4)
    out = export_run(ctx("export", c, model=model, output=tmp_path / "m.onnx", options={"gen_ds_config": True}))
    ds = (tmp_path / "nvinfer_config.txt").read_text()
    assert "network-type=100" in ds and "output-tensor-meta=1" in ds
    assert (
        "output-blob-names=heatmap_out;paf_out" in ds
        and "net-scale-factor=0.00390625" in ds
        and "offsets=128.0;128.0;128.0" in ds
    )
    ev_tlk = evaluate_run(
        ctx("evaluate", c, model=model, results_dir=tmp_path / "ev_tlk", options={"annotations": trained["val"]})
    )
    ev_onnx = evaluate_run(
        ctx(
            "evaluate",
            c,
            model=Path(out["onnx"]),
            results_dir=tmp_path / "ev_onnx",
            options={"annotations": trained["val"]},
        )
    )
    for k in ("AP_0.50:0.95_all", "AP_0.5"):
        assert abs(ev_tlk.kpi[k] - ev_onnx.kpi[k]) < 1e-6, (ev_tlk.kpi, ev_onnx.kpi)
    # training validated the same model on the same images with the same post-processing (the model's own)
    row = trained["res"].history[-1]
    assert ev_tlk.kpi["AP_0.50:0.95_all"] == pytest.approx(row["AP"])
    assert ev_tlk.kpi["AP_0.5"] == pytest.approx(row["AP50"])
    assert json.loads((tmp_path / "ev_tlk" / "evaluation.json").read_text())["kpi"] == ev_tlk.kpi
    assert set(ev_tlk.artifacts) == {"detections.json", "evaluation.json", "results.csv"}
    dets = json.loads(Path(ev_tlk.artifacts["detections.json"]).read_text())
    assert ev_tlk.metrics["num_predictions"] == len(dets) and ev_tlk.metrics["num_images"] == 3


def test_inference_images_and_video(trained, tmp_path):
    import cv2

    from tlkit_pose.inference import run as infer_run

    c = Console(quiet=True)
    model = trained["res"].model_path
    images = trained["val"].parent / "images"
    res = infer_run(ctx("inference", c, model=model, results_dir=tmp_path / "inf", options={"image_dir": images}))
    assert res["images"] == 3
    written = sorted(p.name for p in (tmp_path / "inf" / "images_annotated").iterdir())
    assert written == sorted(p.name for p in images.iterdir())
    dets = json.loads((tmp_path / "inf" / "detections.json").read_text())
    assert all(len(d["keypoints"]) == 51 and "file_name" in d for d in dets)

    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (S + 16, S))
    for p in sorted(images.iterdir()):
        w.write(cv2.imread(str(p)))
    w.release()
    res = infer_run(ctx("inference", c, model=model, results_dir=tmp_path / "vid", options={"input": video}))
    assert res["frames"] == 3
    cap = cv2.VideoCapture(res["video"])
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 3


def test_inference_bad_inputs(trained, tmp_path):
    from tlkit_pose.inference import run as infer_run

    c = Console(quiet=True)
    model = trained["res"].model_path
    with pytest.raises(TlkitError, match="exactly one of"):
        infer_run(ctx("inference", c, model=model, results_dir=tmp_path, options={}))
    bad = tmp_path / "notes.csv"
    bad.write_text("x")
    with pytest.raises(DataError, match="not an image"):
        infer_run(ctx("inference", c, model=model, results_dir=tmp_path, options={"input": bad}))
    listed = tmp_path / "list.txt"  # a list whose images are all missing: each skipped, then the error
    listed.write_text("a.png\nb.png\n")
    with pytest.raises(DataError, match=r"list\.txt: none of the 2 image\(s\) could be read \(.*a\.png: cannot read"):
        infer_run(ctx("inference", c, model=model, results_dir=tmp_path / "l", options={"image": listed}))
    assert not (tmp_path / "l" / "detections.json").exists()
    with pytest.raises(DataError, match="no images found"):
        (tmp_path / "empty").mkdir()
        infer_run(ctx("inference", c, model=model, results_dir=tmp_path, options={"image_dir": tmp_path / "empty"}))


def test_prune_keeps_heads_and_retrains(trained, tmp_path):
    import mxnet as mx

    from tlkit.model_io import load_model
    from tlkit.pruning.command import run as prune_run
    from tlkit_pose.model import head_nodes
    from tlkit_pose.train import train_model

    c = Console(quiet=True)
    model = trained["res"].model_path
    pruned = tmp_path / "pruned.tlk"
    prune_run(ctx("prune", c, model=model, output=pruned, options={"target_ratio": 0.5}))
    before, after = load_model(model), load_model(pruned)
    assert after.kind == "graph"
    n_before = sum(int(np.prod(v.shape)) for v in before.params.values())
    n_after = sum(int(np.prod(v.shape)) for v in after.params.values())
    assert n_after < n_before
    for node in head_nodes(2):
        w = after.params[f"arg:{node[:-4]}_weight"]
        assert w.shape[0] in (19, 38)  # output channels kept
    # the last heads' biases are untouched
    for kind in ("heatmap", "paf"):
        name = f"bpnet_stage2_{kind}_bias"
        np.testing.assert_array_equal(
            after.params[f"arg:{name}"].asnumpy(), before.params[f"stage2.{kind}.bias"].asnumpy()
        )

    cfg = trained["cfg"].model_copy(deep=True)
    cfg.train_config.pretrained_model_path = str(pruned)
    cfg.train_config.load_graph = True
    cfg.train_config.distillation.teacher = str(model)  # heatmaps and PAFs of the unpruned model
    res = train_model(cfg, tmp_path / "retrain", c, [mx.cpu()])
    assert load_model(res.model_path).kind == "graph"
    assert sum(int(np.prod(v.shape)) for v in load_model(res.model_path).params.values()) == n_after
    assert res.history[-1]["teacher_s"] > 0
    if cfg.dataloader.val_annotations:
        assert [r.get("stage") for r in res.history[:2]] == ["pruned", "bn_reestimated"]


def test_pose_distillation_loss_compares_every_stage_with_the_teacher():
    import mxnet as mx

    from tlkit_pose.train import distill_loss

    rng = np.random.default_rng(0)
    hm, paf = mx.nd.array(rng.normal(size=(2, 19, 4, 4))), mx.nd.array(rng.normal(size=(2, 38, 4, 4)))
    assert np.allclose(distill_loss((hm, paf, hm, paf), (hm, paf), 1.0).asnumpy(), 0.0)
    one = distill_loss((hm + 1, paf), (hm, paf), 1.0).asnumpy()
    np.testing.assert_allclose(one, 19.0)  # 19 maps x 16 cells x 1^2 / 16 cells
    np.testing.assert_allclose(distill_loss((hm + 1, paf, hm + 1, paf), (hm, paf), 1.0).asnumpy(), 2 * one)


def test_prune_equivalent_to_masked_original():
    import mxnet as mx

    from tlkit.testing.pruning import assert_prune_equivalent
    from tlkit_pose.model import build_net, head_nodes

    net = build_net({"arch": "resnet18", "backbone_blocks": 3, "stages": 2, "stage_channels": 16})
    net.initialize(mx.init.Xavier())
    res = assert_prune_equivalent(net, (3, 32, 48), threshold=0.6, excluded_layers=head_nodes(2))
    assert res.report.params_after < res.report.params_before


def test_sdk_compatible_export(trained, tmp_path):
    from tlkit.export.runners import OnnxRuntimeRunner
    from tlkit.model_io import load_net
    from tlkit_pose.export import run as export_run
    from tlkit_pose.predict import PosePredictor

    c = Console(quiet=True)
    model = trained["res"].model_path
    out = export_run(
        ctx(
            "export",
            c,
            model=model,
            output=tmp_path / "sdk.onnx",
            options={"sdk_compatible_model": True, "upsample_ratio": 4},
        )
    )
    r = OnnxRuntimeRunner(out["onnx"])
    x = np.random.default_rng(0).normal(0, 1, (2, 3, S, S)).astype(np.float32)
    hm, paf = r.run(x)
    assert hm.shape == (2, 19, S // 2, S // 2) and paf.shape == (2, 38, S // 2, S // 2)
    # inside the border, the x4 transposed convolution is half-pixel bilinear interpolation of the stride-8 maps
    import mxnet as mx

    net, _ = load_net(model)
    ref = net(mx.nd.array(x))[0].asnumpy()

    def up(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        u = (np.arange(4 * n) + 0.5) / 4 - 0.5
        lo = np.clip(np.floor(u).astype(int), 0, n - 2)
        f = (u - lo).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        return np.take(a, lo, axis) * (1 - f) + np.take(a, lo + 1, axis) * f

    want = up(up(ref, 2), 3)
    inner = slice(2, 4 * (S // 8) - 2)
    np.testing.assert_allclose(hm[:, :, inner, inner], want[:, :, inner, inner], rtol=1e-4, atol=1e-5)
    # the predictor reads the x4 outputs at stride 2: the same people as from the stride-8 model. A 1-epoch model
    # finds nobody, so the "networks" here give known maps: the stride-8 one the targets of two people, the
    # sdk one their x4 half-pixel bilinear upsampling (what the exported graph computes, checked above); each
    # predictor takes its metadata from its model file
    from tlkit.export.runners import load_runner
    from tlkit.model_io import read_meta
    from tlkit_pose.skeleton import coco_to_parts
    from tlkit_pose.synthetic import random_pose
    from tlkit_pose.targets import render_targets

    hw = (128, 256)  # a bigger input than the model's, for an output grid fine enough to place 17 parts
    coco = np.zeros((2, 17, 3))
    for i, rng in enumerate(np.random.default_rng(seed) for seed in (1, 2)):
        coco[i, :, :2], coco[i, :, 2] = random_pose(rng) * 100 + [60 + i * 120, 12], 2
    hm8, paf8 = (m.transpose(2, 0, 1)[None] for m in render_targets(coco_to_parts(coco), hw, 8))

    def predictor(meta, maps):
        meta = {**meta, "input_shape": [3, *hw]}
        return PosePredictor(lambda x: [np.repeat(m, len(x), axis=0) for m in maps], meta)

    sdk_meta = load_runner(out["onnx"]).metadata
    assert sdk_meta["postprocessing"]["stride"] == 2
    image = np.zeros((*hw, 3), np.uint8)
    (a,) = predictor(read_meta(model), (hm8, paf8)).people([image])
    (b,) = predictor(sdk_meta, [up(up(m, 2), 3) for m in (hm8, paf8)]).people([image])
    assert len(a) == len(b) == 2
    for pa, pb in zip(sorted(a, key=lambda p: p.keypoints[0, 0]), sorted(b, key=lambda p: p.keypoints[0, 0])):
        assert (pa.keypoints[:, 2] > 0).all() and (pb.keypoints[:, 2] > 0).all()
        assert np.abs(pa.keypoints[:, :2] - pb.keypoints[:, :2]).max() <= 2  # peaks are whole pixels
    truth = coco_to_parts(coco)[:, :, :2]
    assert np.abs(np.array([p.keypoints[:, :2] for p in sorted(b, key=lambda p: p.keypoints[0, 0])]) - truth).max() <= 2


def test_evaluate_needs_model_or_predictions(tmp_path):
    from tlkit_pose.evaluate import run as evaluate_run

    with pytest.raises(TlkitError, match="give -m MODEL"):
        evaluate_run(
            ctx("evaluate", Console(quiet=True), results_dir=tmp_path, options={"annotations": tmp_path / "a.json"})
        )


def test_int8_export_calibrated_from_images(trained, tmp_path):
    from tlkit.export.onnx_export import read_onnx_metadata
    from tlkit.export.runners import OnnxRuntimeRunner
    from tlkit_pose.export import run as export_run

    images = trained["val"].parent / "images"
    out = export_run(
        ctx(
            "export",
            Console(quiet=True),
            model=trained["res"].model_path,
            output=tmp_path / "q.onnx",
            options={"data_type": "int8", "cal_image_dir": images, "batches": 1, "batch_size": 2},
        )
    )
    assert read_onnx_metadata(out["onnx"])["data_type"] == "int8"
    assert Path(out["cal_cache_file"]).is_file()
    hm, paf = OnnxRuntimeRunner(out["onnx"]).run(np.zeros((1, 3, S, S), np.float32))
    assert hm.shape == (1, 19, S // 8, S // 8) and paf.shape == (1, 38, S // 8, S // 8)


def test_cli_export_sdk_and_inference(trained, tmp_path):
    from tlkit.testing.plugins import run_tlkit

    model = trained["res"].model_path
    onnx = tmp_path / "sdk.onnx"
    r = run_tlkit(
        ["pose", "export", "-m", str(model), "-o", str(onnx), "--sdk_compatible_model", "-u", "4", "--gen_ds_config"]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert onnx.is_file() and "network-type=100" in (tmp_path / "nvinfer_config.txt").read_text()
    images = trained["val"].parent / "images"
    r = run_tlkit(
        ["pose", "inference", "-m", str(onnx), "-d", str(images), "-r", str(tmp_path / "inf"), "--no_visualizations"]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "inf" / "detections.json").is_file() and not (tmp_path / "inf" / "images_annotated").exists()
    r = run_tlkit(["pose", "inference", "-m", str(onnx), "-r", str(tmp_path / "inf2")])
    assert r.returncode != 0 and "exactly one of" in r.stdout + r.stderr


def test_evaluate_and_inference_apply_the_spec_scales(trained, tmp_path, monkeypatch):
    """inference.scales reaches the commands: each image is fitted once per scale, and scales [1.0] gives the
    same detections as the default spec."""
    from tlkit_pose import predict
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.evaluate import run as evaluate_run
    from tlkit_pose.inference import run as infer_run

    seen: list[float] = []
    fit = predict.fit_input
    monkeypatch.setattr(predict, "fit_input", lambda img, hw, scale=1.0: (seen.append(scale), fit(img, hw, scale))[1])
    c, model, val = Console(quiet=True), trained["res"].model_path, trained["val"]
    dets, kpi = {}, {}
    for name, scales in (("default", None), ("one", [1.0]), ("two", [0.5, 1.0])):
        cfg = PoseConfig.model_validate({"inference": {"scales": scales}} if scales else {})
        seen.clear()
        out = evaluate_run(
            ctx("evaluate", c, model=model, spec=cfg, results_dir=tmp_path / name, options={"annotations": val})
        )
        assert seen == (scales or [1.0]) * 3  # 3 validation images
        dets[name], kpi[name] = json.loads((tmp_path / name / "detections.json").read_text()), out.kpi
    assert dets["one"] == dets["default"] and kpi["one"] == kpi["default"]
    seen.clear()
    cfg = PoseConfig.model_validate({"inference": {"scales": [0.5, 1.0, 2.0]}})
    res = infer_run(
        ctx(
            "inference",
            c,
            model=model,
            spec=cfg,
            results_dir=tmp_path / "inf",
            options={"image_dir": val.parent / "images"},
        )
    )
    assert res["images"] == 3 and seen == [0.5, 1.0, 2.0] * 3


def test_qat_from_scratch_exports_int8_without_calibration(trained, tmp_path):
    import mxnet as mx

    from tlkit.model_io import read_meta
    from tlkit.testing.qat import assert_qat_export_reproduces
    from tlkit_pose.train import train_model

    cfg = trained["cfg"].model_copy(deep=True)
    cfg.train_config.enable_qat = True
    res = train_model(cfg, tmp_path / "qat", Console(quiet=True), [mx.cpu()])
    assert read_meta(res.model_path)["qat"]["activations_quantized"] >= 8
    assert np.isfinite(res.history[-1]["loss"])
    # the AP training reported is the QAT model file's (fake quantization included) on the same images
    from tlkit_pose.evaluate import run as evaluate_run

    ev = evaluate_run(
        ctx(
            "evaluate",
            Console(quiet=True),
            model=res.model_path,
            results_dir=tmp_path / "ev",
            options={"annotations": trained["val"]},
        )
    )
    assert ev.kpi["AP_0.50:0.95_all"] == pytest.approx(res.history[-1]["AP"])
    assert_qat_export_reproduces(res.model_path, out_dir=tmp_path)
