"""GluonCV SSD / YOLOv3 through the detection spec and commands: every arch builds for the user's classes
with the right output shapes; SSD trains 1 epoch on the synthetic set -> evaluate (.tlk and .onnx agree)
-> inference -> export (onnxruntime equals MXNet before NMS); pretrained detector weights load with the
class heads reset (matching classes reused); pruned SSD / YOLOv3 graphs retrain (load_graph); bad arch names
and unsupported commands fail clearly."""

from pathlib import Path

import numpy as np
import pytest
from detection_synth import CLASSES, tiny_spec, write_synthetic_kitti, write_synthetic_records
from rich.console import Console

from tlkit.errors import ModelFileError, SpecError
from tlkit.testing import make_context

SSD = {
    "model_config.detector": "ssd",
    "model_config.arch": "mobilenet_v1",
    "train_config.pretrained_model_path": None,
    "train_config.optimizer": {"type": "sgd", "momentum": 0.9},
    "train_config.lr_config": {"type": "constant", "learning_rate": 1e-3},
}


def _ctx(command, **kw):
    return make_context("detection", command, gpus=0, console=Console(width=120, highlight=False), **kw)


def _build(detector, arch, classes, size=(128, 96)):
    import mxnet as mx

    from tlkit_detection.detectors import get
    from tlkit_detection.detectors.gluoncv import initialize

    net = get(detector).build_net(
        {"detector": detector, "backbone": arch, "classes": list(classes), "input_size": list(size)}
    )
    initialize(net, [mx.cpu()])
    return net


@pytest.mark.parametrize(
    "detector,arch,size,n_anchors",
    [
        ("ssd", "mobilenet_v1", (128, 96), 302),  # stride 16..512 maps: 8x6, 4x3, 2x2, 1x1, 1x1, 1x1 (x4/6 anchors)
        ("ssd", "resnet50", (128, 96), 302),
        ("ssd", "efficientnet_lite0", (128, 96), 1160),  # strides 8..256: 16x12, 8x6, 4x3, 2x2, 1x1, 1x1
        ("ssd", "vgg16", (272, 272), 7034),
        ("yolov3", "darknet53", (128, 96), 756),  # 3 anchors on 16x12 + 8x6 + 4x3
        ("yolov3", "mobilenet_v1", (128, 96), 756),
    ],
)
def test_each_arch_builds_for_the_users_classes(detector, arch, size, n_anchors):
    import mxnet as mx

    classes = ["cat", "dog", "bird"]
    net = _build(detector, arch, classes, size)
    ids, scores, boxes = net(mx.nd.random.uniform(shape=(1, 3, size[1], size[0])))
    m = len(classes) * n_anchors  # decoded boxes before NMS: one per (class, anchor)
    assert ids.shape == (1, m, 1) and scores.shape == (1, m, 1) and boxes.shape == (1, m, 4)
    assert set(np.unique(ids.asnumpy())) <= {-1.0, 0.0, 1.0, 2.0}
    assert net.classes == classes
    if detector == "ssd":
        with mx.autograd.train_mode():
            cls_preds, _, anchors = net(mx.nd.zeros((1, 3, size[1], size[0])))
        assert cls_preds.shape == (1, n_anchors, len(classes) + 1) and anchors.shape == (1, n_anchors, 4)


def test_bad_arch_and_detector_names_list_the_choices(tmp_path):
    import pydantic

    from tlkit_detection.detectors import get

    # neither a GluonCV preset nor a registered backbone (those: test_registered_backbone.py)
    cfg = tiny_spec(tmp_path / "m.json", **{"model_config.detector": "ssd", "model_config.arch": "googlenet_v3"})
    with pytest.raises(
        SpecError,
        match=r"'googlenet_v3' is not available for detector 'ssd': not one of GluonCV's "
        r"mobilenet_v1, resnet18, resnet50, vgg16 \(resnet/vgg/darknet with "
        r"model_config.n_layers.*nor a registered backbone \(.*efficientnet_lite0",
    ):
        get(cfg.model.detector).build_meta(cfg, ["a"])
    cfg = tiny_spec(
        tmp_path / "m.json",
        **{"model_config.detector": "yolov3", "model_config.arch": "resnet", "model_config.n_layers": 19},
    )
    with pytest.raises(
        SpecError,
        match="'resnet19' is not available for detector 'yolov3': not one of GluonCV's darknet53, mobilenet_v1",
    ):
        get(cfg.model.detector).build_meta(cfg, ["a"])
    cfg = tiny_spec(
        tmp_path / "m.json", **{"model_config.detector": "ssd", "model_config.arch": "vgg", "model_config.n_layers": 16}
    )
    with pytest.raises(SpecError, match="at least 264 px"):
        get(cfg.model.detector).build_meta(cfg, ["a"])
    with pytest.raises(pydantic.ValidationError, match="detectnet_v2', 'ssd' or 'yolov3'"):
        tiny_spec(tmp_path / "m.json", **{"model_config.detector": "faster_rcnn"})


def test_imagenet_base_weights_are_never_downloaded(tmp_path, monkeypatch):
    from tlkit_detection.detectors.gluoncv import _pretrained_base_tag

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    with pytest.raises(
        ModelFileError, match=r"ImageNet weights of mobilenet1.0 not found: expected .*mobilenet1.0-<hash>"
    ):
        _pretrained_base_tag("mobilenet1.0", True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mobilenet1.0-efbb2ca3.params").write_bytes(b"")
    assert _pretrained_base_tag("mobilenet1.0", True) == "efbb2ca3"  # gluoncv then loads it by tag, offline


def test_gluoncv_base_network_uri_is_the_imagenet_start(tmp_path, gluoncv_classifier):
    """`pretrained_model_path: gluoncv://mobilenet1.0` for SSD on mobilenet_v1: GluonCV's pretrained_base from
    $MXNET_HOME/models (present here: nothing is downloaded); another classifier is refused clearly."""
    import mxnet as mx

    from tlkit_detection.detectors import get

    base = gluoncv_classifier("mobilenet1.0")
    cfg = tiny_spec(tmp_path / "none.json", **{**SSD, "train_config.pretrained_model_path": "gluoncv://mobilenet1.0"})
    built = get("ssd").build_for_training(cfg, ["dog", "cat"], [mx.cpu()])
    want = base.features[0].weight.data().asnumpy()
    first = [p.data().asnumpy() for p in built.net.features.collect_params().values() if p.shape == want.shape]
    np.testing.assert_array_equal(first[0], want)
    cfg.train_config.pretrained_model_path = "gluoncv://resnet50_v1"
    with pytest.raises(
        SpecError,
        match=r"gluoncv://resnet50_v1: ssd on mobilenet_v1 starts from its base network "
        r"gluoncv://mobilenet1.0 or from a detector",
    ):
        get("ssd").build_for_training(cfg, ["dog", "cat"], [mx.cpu()])


def _file_and_new_net(detector, tmp_path):
    """A detector trained on ["person", "car", "dog"] saved to a .params file, and a new one for ["dog", "cat"]."""
    import mxnet as mx

    src = _build(detector, "mobilenet_v1", ["person", "car", "dog"])
    src(mx.nd.zeros((1, 3, 96, 128)))
    path = tmp_path / f"{detector}_pretrained.params"
    src.save_parameters(str(path))
    net = _build(detector, "mobilenet_v1", ["dog", "cat"])
    net(mx.nd.zeros((1, 3, 96, 128)))
    return src, net, path


def test_pretrained_detector_file_resets_class_heads_reusing_matches(tmp_path):
    from tlkit_detection.detectors import get

    src, net, path = _file_and_new_net("ssd", tmp_path)
    get("ssd").load_detector_weights(net, str(path), ["dog", "cat"], ["person", "car", "dog"])
    assert net.classes == ["dog", "cat"]
    # backbone and box heads equal the file's; the class head row block of 'dog' moved to position 1
    a = src.features.collect_params()
    b = net.features.collect_params()
    for (_, pa), (_, pb) in zip(sorted(a.items()), sorted(b.items())):
        np.testing.assert_array_equal(pa.data().asnumpy(), pb.data().asnumpy())
    np.testing.assert_array_equal(
        src.box_predictors[0].predictor.weight.data().asnumpy(), net.box_predictors[0].predictor.weight.data().asnumpy()
    )
    w_new = net.class_predictors[0].predictor.weight.data().asnumpy()
    n_anchor = w_new.shape[0] // 3
    w_src = src.class_predictors[0].predictor.weight.data().asnumpy().reshape(n_anchor, 4, -1)
    w_new = w_new.reshape(n_anchor, 3, -1)
    np.testing.assert_array_equal(w_new[:, 0], w_src[:, 0])  # background
    np.testing.assert_array_equal(w_new[:, 1], w_src[:, 3])  # dog (file class 2 -> slot 3)
    assert not np.array_equal(w_new[:, 2], w_src[:, 1])  # cat is new
    with pytest.raises(SpecError, match="lists 2 classes"):
        get("ssd").load_detector_weights(net, str(path), ["dog", "cat"], ["person", "car"])


def test_pretrained_yolov3_file_reuses_the_matching_class(tmp_path):
    from tlkit_detection.detectors import get

    src, net, path = _file_and_new_net("yolov3", tmp_path)
    get("yolov3").load_detector_weights(net, str(path), ["dog", "cat"], ["person", "car", "dog"])
    # per anchor: 4 box + 1 objectness + classes; box/objectness rows kept, 'dog' (file class 2) -> class 0
    w_src = src.yolo_outputs[0].prediction.weight.data().asnumpy().reshape(3, 8, -1)
    w_new = net.yolo_outputs[0].prediction.weight.data().asnumpy().reshape(3, 7, -1)
    np.testing.assert_array_equal(w_new[:, :5], w_src[:, :5])
    np.testing.assert_array_equal(w_new[:, 5], w_src[:, 7])
    np.testing.assert_array_equal(src.stages[0][0].weight.data().asnumpy(), net.stages[0][0].weight.data().asnumpy())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tlkit_detection.train import run as train_run

    tmp = tmp_path_factory.mktemp("gcv")
    manifest = write_synthetic_records(tmp, n=16, val_split=25)
    cfg = tiny_spec(manifest, **SSD)
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp / "results"))
    return {"tmp": tmp, "cfg": cfg, "out": out, "model": Path(out["model"])}


def test_ssd_train_evaluate_inference_export(trained, tmp_path):
    from tlkit.export.command import run as export_run
    from tlkit.model_io import read_meta
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.inference import run as infer_run

    out, cfg = trained["out"], trained["cfg"]
    assert out["mean average precision"] == pytest.approx(np.mean([out[f"AP {c}"] for c in CLASSES]))
    meta = read_meta(trained["model"])
    assert meta["detector"] == "ssd" and meta["classes"] == list(CLASSES)
    assert meta["output_names"] == ["ids", "scores", "bboxes"]
    rows = (trained["tmp"] / "results" / "training.csv").read_text().splitlines()
    assert len(rows) == 2 and float(rows[1].split(",")[rows[0].split(",").index("loss")]) > 0

    r1 = eval_run(_ctx("evaluate", spec=cfg, model=trained["model"], results_dir=tmp_path / "e1", options={}))
    assert set(r1.metrics["average_precision"]) == set(CLASSES) and r1.metrics["backend"] == "mxnet"
    assert r1.kpi["mean average precision"] == pytest.approx(out["mean average precision"] * 100, abs=1e-6)
    onnx = tmp_path / "model.onnx"
    export_run(_ctx("export", model=trained["model"], output=onnx, options={"gen_ds_config": True}))
    ds = (tmp_path / "nvinfer_config.txt").read_text()  # NMS in the graph, read by DeepStream's stock TF-SSD parser
    assert "complete: runs as written" in ds.splitlines()[0]
    assert "network-type=0" in ds and "parse-bbox-func-name=NvDsInferParseCustomTfSSD" in ds and "cluster-mode=4" in ds
    assert "output-blob-names=num_detections;detection_boxes;detection_scores;detection_classes" in ds
    assert "custom-lib-path=/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so" in ds
    r2 = eval_run(_ctx("evaluate", spec=cfg, model=onnx, options={}))
    assert r2.metrics["backend"] != "mxnet"
    for c in CLASSES:
        assert r2.metrics["num_predictions"][c] == r1.metrics["num_predictions"][c]
        assert r2.metrics["average_precision"][c] == pytest.approx(r1.metrics["average_precision"][c], abs=1e-6)

    imgs = write_synthetic_kitti(tmp_path / "new", n=2, seed=9) / "images"
    res = infer_run(_ctx("inference", model=onnx, results_dir=tmp_path / "inf", options={"image_dir": imgs}))
    labels = sorted((tmp_path / "inf" / "labels").glob("*.txt"))
    assert res["images"] == 2 and [p.stem for p in labels] == ["0000", "0001"]
    for p in labels:
        lines = p.read_text().splitlines()
        assert len(lines) <= 100
        for line in lines:
            f = line.split()
            assert len(f) == 16 and f[0] in CLASSES and 0 < float(f[15]) <= 1


def test_onnx_matches_mxnet_before_nms(trained, tmp_path):
    from tlkit.model_io import load_net
    from tlkit.testing.export import assert_onnx_matches

    net, meta = load_net(trained["model"])
    meta = {k: v for k, v in meta.items() if k != "export_nms"}  # the raw decoded boxes, without the graph's NMS
    assert_onnx_matches(net, tuple(meta["input_shape"]), meta=meta, out_dir=tmp_path, batch_sizes=(1, 2))


def test_postprocess_nms_per_class_and_scaling():
    from tlkit_detection.detectors.gluoncv import postprocess_gluoncv

    ids = np.array([[[0], [0], [1], [-1]]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.7], [0.95]]], np.float32)
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]], np.float32)
    p = {
        "nms_iou_threshold": 0.45,
        "confidence_threshold": 0.01,
        "minimum_bounding_box_height": 0.0,
        "top_k": 400,
        "max_detections": 100,
    }
    (dets,) = postprocess_gluoncv(ids, scores, boxes, ["a", "b"], (100, 100), {"a": p, "b": p}, [(200, 50)])
    # the overlapping 'a' box is suppressed, 'b' is kept (NMS per class), id -1 is dropped; x2, y/2
    assert [(d.class_name, round(d.confidence, 2)) for d in dets] == [("a", 0.9), ("b", 0.7)]
    np.testing.assert_allclose(dets[0].bbox, [0, 0, 20, 5])


def test_yolov3_trains_one_epoch_evaluates_and_retrains_pruned(tmp_path):
    from tlkit.model_io import read_meta
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.train import run as train_run

    manifest = write_synthetic_records(tmp_path, n=8, val_split=25)
    cfg = tiny_spec(manifest, **{**SSD, "model_config.detector": "yolov3"})
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "y"))
    assert out["loss"] > 0
    r = eval_run(_ctx("evaluate", spec=cfg, model=Path(out["model"]), options={}))
    assert r.kpi["mean average precision"] == pytest.approx(out["mean average precision"] * 100, abs=1e-6)

    pruned = tmp_path / "pruned.tlk"
    report = prune_model_file(out["model"], pruned, target_ratio=0.5, min_filters=8)
    assert report.params_after <= 0.5 * report.params_before
    rout = train_run(_ctx("train", spec=_retrain_spec(cfg, pruned, teacher=out["model"]), results_dir=tmp_path / "r"))
    assert rout["loss"] > 0 and read_meta(rout["model"])["kind"] == "graph"
    assert "teacher_s" in (tmp_path / "r" / "training.csv").read_text().splitlines()[0]  # distilled from the unpruned
    r = eval_run(_ctx("evaluate", spec=cfg, model=Path(rout["model"]), options={}))
    assert r.kpi["mean average precision"] == pytest.approx(rout["mean average precision"] * 100, abs=1e-6)
    # the pruned YOLOv3 exports with NMS in the graph and scores the same through it
    from tlkit.export.command import run as export_run

    onnx_path = tmp_path / "yolo.onnx"
    export_run(_ctx("export", model=Path(rout["model"]), output=onnx_path, options={}))
    r_onnx = eval_run(_ctx("evaluate", spec=cfg, model=onnx_path, options={}))
    assert r_onnx.metrics["num_predictions"] == r.metrics["num_predictions"]
    assert r_onnx.kpi["mean average precision"] == pytest.approx(r.kpi["mean average precision"], abs=1e-6)


def _retrain_spec(cfg, pruned, teacher=None):
    cfg = cfg.model_copy(deep=True)
    cfg.train_config.pretrained_model_path, cfg.train_config.load_graph = str(pruned), True
    cfg.train_config.distillation.teacher = str(teacher) if teacher else None
    return cfg


def test_prune_keeps_the_heads_and_the_pruned_graph_retrains(trained, tmp_path):
    import mxnet as mx

    from tlkit.model_io import load_net, read_meta
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.detectors.gluoncv import _retrainable_graph_class
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.model import count_params
    from tlkit_detection.predict import load_detector
    from tlkit_detection.train import run as train_run

    pruned = tmp_path / "pruned.tlk"
    report = prune_model_file(trained["model"], pruned, target_ratio=0.5, min_filters=8)
    assert report.params_after <= 0.5 * report.params_before
    meta = read_meta(pruned)
    assert meta["kind"] == "graph" and len(meta["prune_exclude"]) == 12  # 6 class + 6 box predictors
    a, b = load_detector(trained["model"]), load_detector(pruned)
    x = np.zeros((1, 3, 96, 128), np.float32)
    assert [o.shape for o in a.heads(x)] == [o.shape for o in b.heads(x)]

    # the training outputs found in the pruned graph are GluonCV's SSD training outputs: same anchors,
    # and the class / box predictions that decode to the inference outputs
    graph, _ = load_net(pruned)
    net = _retrainable_graph_class()(graph, meta, [mx.cpu()])
    x = mx.nd.random.uniform(shape=(1, 3, 96, 128))
    with mx.autograd.train_mode():
        cls_preds, box_preds, anchors = net(x)
    full, _ = load_net(trained["model"])
    with mx.autograd.train_mode():
        _, _, full_anchors = full(x)
    np.testing.assert_allclose(anchors.asnumpy(), full_anchors.asnumpy())
    assert cls_preds.shape == (1, anchors.shape[1], len(CLASSES) + 1) and box_preds.shape == (1, anchors.shape[1], 4)
    ids, scores, _ = net(x)  # inference: the saved graph; the same BatchNorm mode for both here
    cls_preds, _, _ = net._train(x)
    best = mx.nd.softmax(cls_preds, axis=-1)[0, :, 1:].asnumpy().max()
    np.testing.assert_allclose(scores.asnumpy().max(), best, rtol=1e-5)

    out = train_run(
        _ctx("train", spec=_retrain_spec(trained["cfg"], pruned, teacher=trained["model"]), results_dir=tmp_path / "r")
    )
    assert out["loss"] > 0
    assert "teacher_s" in (tmp_path / "r" / "training.csv").read_text().splitlines()[0]  # distilled from the unpruned
    retrained = read_meta(out["model"])
    assert retrained["kind"] == "graph" and retrained["detector"] == "ssd"
    from tlkit.types import ModelMeta

    assert set(retrained) <= set(ModelMeta.model_fields), set(retrained) - set(
        ModelMeta.model_fields
    )  # every key documented
    assert retrained["prune_exclude"] == meta["prune_exclude"]  # prunable again
    after, _ = load_net(out["model"])
    assert count_params(after) == count_params(graph) == report.params_after
    assert not np.allclose(
        after.collect_params()[meta["prune_exclude"][0] + "_weight"].data().asnumpy(),
        graph.collect_params()[meta["prune_exclude"][0] + "_weight"].data().asnumpy(),
    )
    r = eval_run(_ctx("evaluate", spec=trained["cfg"], model=Path(out["model"]), options={}))
    assert r.kpi["mean average precision"] == pytest.approx(out["mean average precision"] * 100, abs=1e-6)


def test_ssd_teacher_gives_training_outputs_and_the_distillation_losses_compare_them(trained):
    import mxnet as mx

    from tlkit_detection.detectors import get
    from tlkit_detection.detectors.ssd import ssd_distill_loss
    from tlkit_detection.detectors.yolov3 import yolo_distill_loss

    teacher = get("ssd").load_teacher(trained["model"], [mx.cpu()])
    cls_preds, box_preds, anchors = teacher(mx.nd.random.uniform(shape=(2, 3, 96, 128)))
    assert cls_preds.shape == (2, anchors.shape[1], len(CLASSES) + 1) and box_preds.shape[2] == 4
    same = ssd_distill_loss((cls_preds, box_preds, anchors), (cls_preds, box_preds, anchors), 2.0).asnumpy()
    other = ssd_distill_loss((-cls_preds, box_preds + 1, anchors), (cls_preds, box_preds, anchors), 2.0).asnumpy()
    assert same.shape == (2,) and np.allclose(same, 0, atol=1e-5) and (other > 1e-3).all()
    rng = np.random.default_rng(0)
    yolo = [mx.nd.array(rng.normal(size=(2, 30, k))) for k in (4, 1, 2, 2, 3)]
    y_same = yolo_distill_loss(yolo, yolo, 1.0).asnumpy()
    y_other = yolo_distill_loss([y * -1 for y in yolo], yolo, 1.0).asnumpy()
    assert (y_other > y_same).all()


def test_a_pruned_graph_retrains_only_as_its_own_detector(trained, tmp_path):
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.train import run as train_run

    pruned = tmp_path / "pruned.tlk"
    prune_model_file(trained["model"], pruned, target_ratio=0.5, min_filters=8)
    cfg = _retrain_spec(trained["cfg"], pruned)
    cfg.model.detector = "detectnet_v2"
    with pytest.raises(
        SpecError, match=r"pruned.tlk is a ssd graph, the spec's model_config.detector is 'detectnet_v2'"
    ):
        train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "r"))
