"""The detector interface (`tlkit_detection.detectors`): a detector registered from outside the package (a tiny
fake one here) is trained, validated, saved, reloaded, evaluated, exported and run by the unchanged commands;
the registry resolves names, model files and ONNX outputs."""

from pathlib import Path

import numpy as np
import pytest
from detection_synth import CLASSES, tiny_spec, write_synthetic_kitti, write_synthetic_records
from rich.console import Console

from tlkit.errors import ModelFileError, SpecError
from tlkit.testing import make_context

NAME = "whole_image"


def _ctx(command, **kw):
    return make_context("detection", command, gpus=0, console=Console(width=120, highlight=False), **kw)


def _fake_detector():
    """A detector that says which classes an image shows, each as one box over the whole image: a strided
    convolution, global pooling and a sigmoid per class; trained with binary cross-entropy on class presence."""
    from tlkit_detection.clustering import Detection
    from tlkit_detection.data import epoch_order
    from tlkit_detection.detectors import Detector, Training

    def network(n_classes):
        from mxnet.gluon import nn

        class Presence(nn.HybridBlock):
            def __init__(self):
                super().__init__(prefix="whole_")
                with self.name_scope():
                    self.conv = nn.Conv2D(8, 3, strides=4, padding=1, activation="relu")
                    self.score = nn.Conv2D(n_classes, 1)
                    self.pool = nn.GlobalAvgPool2D()

            def hybrid_forward(self, F, x):
                return F.sigmoid(F.flatten(self.pool(self.score(self.conv(x)))))

        return Presence()

    class WholeImage(Detector):
        name = NAME
        title = "WholeImage"
        output_names = ("presence",)

        def build_for_training(self, cfg, classes, ctx, console=None):
            import mxnet as mx

            from tlkit.transfer import BuiltModel
            from tlkit_detection.model import input_shape_of

            c, h, w = input_shape_of(cfg)
            post = {n: {"threshold": 0.0} for n in classes}  # every class, with its score
            meta = {
                "task": "detection",
                "detector": self.name,
                "arch": "whole_image",
                "classes": list(classes),
                "input_shape": [c, h, w],
                "input_layout": "NCHW",
                "preprocessing": {"mode": "torch", "resize_interpolation": "bilinear"},
                "postprocessing": post,
                **self.export_outputs(post),
                "deepstream": self.deploy_config(cfg, classes),
                "build": {"n_classes": len(classes)},
            }
            net = self.build_from_meta(meta)
            mx.random.seed(cfg.train_config.random_seed)
            net.initialize(mx.init.Xavier(), ctx=ctx)
            return BuiltModel(net, meta, ())

        def build_from_meta(self, meta):
            return network(int(meta["build"]["n_classes"]))

        def training(self, cfg, built, train_ds, ctx, console):
            import mxnet as mx

            from tlkit.export.preprocess import normalize_with, resolve_preprocessing

            pre = resolve_preprocessing(built.meta)
            bce = mx.gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=True)

            def presence(frame):
                y = np.zeros(len(train_ds.classes), np.float32)
                y[frame.classes] = 1
                return y

            def make_batches(batch_size, *, epoch, seed, drop_last, shard=None):
                order = epoch_order(train_ds, epoch, seed)
                n = len(order)
                for start in range(0, n - batch_size + 1 if drop_last else n, batch_size):
                    frames = [train_ds.frames[i] for i in order[start : start + batch_size]]
                    x = np.stack([normalize_with(f.image.astype(np.float32), pre).transpose(2, 0, 1) for f in frames])
                    yield x, np.stack([presence(f) for f in frames])

            def validation_cost(outputs, frames):
                y = mx.nd.array(np.stack([presence(f) for f in frames]), ctx=outputs.context)
                return float(bce(outputs, y).sum().asscalar())

            return Training(loss=bce, batches=make_batches, n_frames=len(train_ds), validation_cost=validation_cost)

        def postprocessing(self, meta, spec=None):
            return {c: dict(meta["postprocessing"][c]) for c in meta["classes"]}

        def decode(self, outputs, classes, input_size, params, orig_sizes):
            (scores,) = outputs
            return [
                [
                    Detection(c, np.array([0.0, 0.0, w0, h0]), float(s[k]), float(s[k]), 1)
                    for k, c in enumerate(classes)
                    if s[k] >= params[c]["threshold"]
                ]
                for s, (w0, h0) in zip(scores, orig_sizes)
            ]

        def deploy_config(self, cfg, classes):
            return {"network_type": 100, "properties": {"output-tensor-meta": 1}}

    return WholeImage()


@pytest.fixture
def fake_detector():
    from tlkit_detection import detectors

    det = detectors.register(_fake_detector())
    yield det
    detectors.unregister(NAME)


def test_a_registered_detector_trains_evaluates_exports_and_infers_through_the_commands(fake_detector, tmp_path):
    from tlkit.export.command import run as export_run
    from tlkit.model_io import load_net, read_meta
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.inference import run as infer_run
    from tlkit_detection.predict import load_detector
    from tlkit_detection.train import run as train_run

    manifest = write_synthetic_records(tmp_path, n=8, val_split=25)
    cfg = tiny_spec(manifest, **{"model_config.detector": NAME})
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "results"))
    model = Path(out["model"])
    assert out["loss"] > 0 and out["validation cost"] > 0  # the fake's loss and validation cost were used
    assert out["mean average precision"] == pytest.approx(np.mean([out[f"AP {c}"] for c in CLASSES]))
    meta = read_meta(model)
    assert meta["detector"] == NAME and meta["output_names"] == ["presence"] and meta["classes"] == list(CLASSES)
    net, _ = load_net(model)  # TaskSpec.build_model rebuilds the fake's network from the file's meta
    assert type(net).__name__ == "Presence"

    r = eval_run(_ctx("evaluate", spec=cfg, model=model, options={}))
    assert r.kpi["mean average precision"] == pytest.approx(out["mean average precision"] * 100, abs=1e-6)

    onnx = tmp_path / "model.onnx"
    export_run(_ctx("export", model=model, output=onnx, options={}))
    tlk_det, onnx_det = load_detector(model), load_detector(onnx)
    assert onnx_det.kind is fake_detector  # no meta["detector"] in ONNX: found by its output names
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 96, 128)).astype(np.float32)
    np.testing.assert_allclose(onnx_det.heads(x)[0], tlk_det.heads(x)[0], atol=1e-5)

    images = write_synthetic_kitti(tmp_path / "new", n=2, size=(160, 120), seed=3) / "images"
    res = infer_run(_ctx("inference", model=onnx, results_dir=tmp_path / "inf", options={"image_dir": images}))
    labels = sorted((tmp_path / "inf" / "labels").glob("*.txt"))
    assert res["images"] == 2 and len(labels) == 2
    for p in labels:
        scores = tlk_det.heads(_preprocessed(images / f"{p.stem}.png", tlk_det.meta))[0][0]
        lines = [line.split() for line in p.read_text().splitlines()]
        # the fake's decode: every class (threshold 0) as one box over the whole 160x120 image, with its score
        assert sorted(f[0] for f in lines) == sorted(CLASSES)
        for f in lines:
            assert [float(v) for v in f[4:8]] == [0.0, 0.0, 160.0, 120.0]
            assert float(f[15]) == pytest.approx(float(scores[CLASSES.index(f[0])]), abs=1e-4)


def _preprocessed(path, meta):
    from tlkit.export.preprocess import preprocess
    from tlkit.images import read_rgb

    return preprocess([read_rgb(path)], meta)


def test_registry_names_model_files_and_unknown_detectors(fake_detector, tmp_path):
    import pydantic

    from tlkit_detection import detectors

    assert detectors.names()[:3] == ["detectnet_v2", "ssd", "yolov3"] and NAME in detectors.names()
    assert detectors.get(NAME) is fake_detector
    # older DetectNet_v2 files have no meta["detector"]; ONNX files are known by their outputs
    assert detectors.for_meta({"output_names": ["output_cov", "output_bbox"]}).name == "detectnet_v2"
    assert detectors.for_meta({}).name == "detectnet_v2"
    assert detectors.for_meta(
        {"output_names": ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]}
    ).name in ("ssd", "yolov3")
    assert detectors.for_meta({"output_names": ["presence"]}) is fake_detector
    with pytest.raises(ModelFileError, match="'centernet' detector: detector 'centernet' is not installed"):
        detectors.for_meta({"detector": "centernet"})
    with pytest.raises(SpecError, match="known: detectnet_v2, ssd, yolov3, whole_image"):
        detectors.get("centernet")
    with pytest.raises(pydantic.ValidationError, match=r"'yolov3' or 'whole_image' \(did you mean 'whole_image'\?\)"):
        tiny_spec(tmp_path / "m.json", **{"model_config.detector": "whole_imag"})


def test_calibration_without_a_model_normalizes_as_the_specs_detector(tmp_path):
    """calibration_tensorfile -e (no -m): the input normalization that preprocess_mode auto means for the
    spec's detector (YOLOv3 on darknet 53: GluonCV's torch mode; DetectNet_v2's backbone lookup knows no
    'darknet' and used to fail here)."""
    from tlkit.export.calibration import read_tensorfile
    from tlkit.export.preprocess import normalize_with, resolve_preprocessing
    from tlkit_detection.calibration import run as cal_run
    from tlkit_detection.data import dataset_for

    manifest = write_synthetic_records(tmp_path, n=8, val_split=25)
    cfg = tiny_spec(
        manifest,
        **{
            "model_config.detector": "yolov3",
            "model_config.arch": "darknet",
            "model_config.n_layers": 53,
            "train_config.batch_size_per_gpu": 2,
        },
    )
    out = tmp_path / "cal.tensorfile"
    res = cal_run(_ctx("calibration_tensorfile", spec=cfg, output=out, options={"max_batches": 1}))
    assert res["count"] == 1
    batch = next(read_tensorfile(out))
    pre = resolve_preprocessing({"preprocessing": {"mode": "torch"}, "input_shape": [3, 96, 128]})
    frames = {
        f.frame_id: normalize_with(f.image.astype(np.float32), pre).transpose(2, 0, 1)
        for f in dataset_for(cfg, "training").frames
    }
    for x in batch:  # each calibration input is one training frame, normalized in torch mode
        assert any(np.allclose(x, want, atol=1e-5) for want in frames.values())
