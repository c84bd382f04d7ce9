"""TensorRT(-RTX) engines from every task's exported model, through the real CLI (issue 5).

For classification, detection (DetectNet_v2) and pose (BodyPoseNet, also with --sdk_compatible_model): a tiny
model built the way `train` builds it (random weights) and saved as .tlk -> `tlkit <task> export` fp32, fp16 and
int8 Q/DQ (calibrated from images) -> `tlkit tensorrt convert -t fp32|fp16|int8`, checking the engine header
(task, input/output names, shape profile, precision), that the builder warned of no precision fallback, and that
the engine's weights shrink with the precision (int8 weights ~1 byte each: no layer kept in float).
Then `evaluate`/`inference` of each task given the .engine on a machine without a GPU: one clear error line.

Runs in the full venv (all packages); skips without a TensorRT flavour (TensorRT-RTX builds on CPU-only
machines). The CLI runs in-process (`tlkit.cli.main`, what the `tlkit` script calls) to keep this fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mxnet")
pytest.importorskip("tlkit_detection")
pytest.importorskip("tlkit_pose")
pytest.importorskip("tlkit_classification")
tlkit_tensorrt_api = pytest.importorskip("tlkit_tensorrt.api")

try:
    TRT = tlkit_tensorrt_api.load_api()
except tlkit_tensorrt_api.TensorRTError as err:  # no tensorrt / tensorrt_rtx module importable
    pytest.skip(str(err), allow_module_level=True)

MAX_BATCH = 4
PRECISIONS = ("fp32", "fp16", "int8")


def tlkit(capsys, *args) -> tuple[int, str, str]:
    """`tlkit ARGS` in this process: (exit code, stdout, stderr)."""
    from tlkit.testing.faults import run_cli

    res = run_cli(capsys, *args)
    return res.code, res.out, res.err


def ok(capsys, *args) -> str:
    code, out, err = tlkit(capsys, *args)
    assert code == 0, f"tlkit {' '.join(map(str, args))} -> {code}\n{out}\n{err}"
    return out


# -- one tiny model per task, built as `train` builds it -------------------------------------------


def _classification(path):
    import mxnet as mx

    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig
    from tlkit_classification.model import build_for_training

    cfg = load_spec(
        None,
        ClassificationConfig,
        ["model_config.arch=resnet", "model_config.n_layers=10", "model_config.input_image_size=3,32,32"],
    )
    return build_for_training(cfg, ["a", "b", "c"], [mx.cpu()])


def _detection(path):
    import mxnet as mx

    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.model import build_for_training

    cfg = DetectionConfig.model_validate(
        {
            "dataset_config": {
                "data_sources": [{"records_path": str(path.parent / "none.json")}],
                "validation_fold": 0,
            },
            "model_config": {"arch": "resnet", "n_layers": 10},
            "augmentation_config": {"preprocessing": {"output_image_width": 64, "output_image_height": 48}},
        }
    )
    return build_for_training(cfg, ["car", "person"], [mx.cpu()])


def _pose(path):
    import mxnet as mx

    from tlkit_pose.config import PoseConfig
    from tlkit_pose.model import build_meta, build_net

    cfg = PoseConfig.model_validate(
        {
            "dataloader": {"image_dims": [48, 64, 3]},
            "pose_config": {"target_shape": [6, 8]},
            "model": {"arch": "mobilenet_v2", "backbone_blocks": 3, "stages": 2, "stage_channels": 8},
        }
    )
    meta = build_meta(cfg)
    mx.random.seed(0)
    net = build_net(meta["build"])
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, *meta["input_shape"])))  # materialise deferred shapes before saving
    return net, meta


BUILDERS = {"classification": _classification, "detection": _detection, "pose": _pose}
# (task, extra export flags): pose also as DeepStream's bodypose2d wants it (outputs upsampled in the graph)
CASES = [("classification", ()), ("detection", ()), ("pose", ()), ("pose", ("--sdk_compatible_model",))]


@pytest.fixture(scope="module")
def tlk_models(tmp_path_factory):
    """{task: (path of the .tlk, its meta)}, plus a folder of calibration images."""
    import cv2

    from tlkit.model_io import save_net

    d = tmp_path_factory.mktemp("every-task")
    out = {}
    for task, build in BUILDERS.items():
        built = build(d / task)
        net, meta = (built.net, built.meta) if hasattr(built, "net") else built
        out[task] = (save_net(d / f"{task}.tlk", net, meta), meta)
    images = d / "images"  # two "classes" of two images: calibration, inference and a labelled folder
    rs = np.random.RandomState(0)
    for i in range(4):  # smooth random colour fields: real-looking statistics for the calibration
        small = rs.randint(0, 256, (4, 4, 3)).astype(np.uint8)
        (images / "ab"[i // 2]).mkdir(parents=True, exist_ok=True)
        image = cv2.resize(small, (80, 60), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(images / "ab"[i // 2] / f"{i}.png"), image)
    out["cal_images"] = images
    return out


@pytest.mark.parametrize("task, flags", CASES, ids=["classification", "detection", "pose", "pose-sdk"])
def test_engines_from_every_task(capsys, tmp_path, tlk_models, task, flags):
    from tlkit.export.onnx_export import read_onnx_metadata

    model, meta = tlk_models[task]
    engines = {}
    for precision in PRECISIONS:
        onnx_path = tmp_path / f"{precision}.onnx"
        cal = (
            ["--cal_image_dir", tlk_models["cal_images"], "--batches", 2, "--batch_size", 2]
            if precision == "int8"
            else []
        )
        ok(capsys, task, "export", "-m", model, "-o", onnx_path, "--data_type", precision, *flags, *cal)
        onnx_meta = read_onnx_metadata(onnx_path)
        assert onnx_meta["task"] == task and onnx_meta["data_type"] == precision
        c, h, w = onnx_meta["input_shape"]
        assert [c, h, w] == list(meta["input_shape"])
        profile = f"input,1x{c}x{h}x{w},2x{c}x{h}x{w},{MAX_BATCH}x{c}x{h}x{w}"
        header = json.loads(
            ok(
                capsys,
                "tensorrt",
                "convert",
                onnx_path,
                "-t",
                precision,
                "-p",
                profile,
                "-e",
                tmp_path / f"{precision}.engine",
                "--json",
            )
        )
        e = header["engine"]
        assert header["model"]["task"] == task and header["model"]["output_names"] == onnx_meta["output_names"]
        assert e["precision"] == precision and e["qdq"] is (precision == "int8")
        assert [i["name"] for i in e["inputs"]] == ["input"] and e["inputs"][0]["shape"] == [-1, c, h, w]
        assert [o["name"] for o in e["outputs"]] == onnx_meta["output_names"]
        assert e["profiles"] == [
            {"name": "input", "min": [1, c, h, w], "opt": [2, c, h, w], "max": [MAX_BATCH, c, h, w]}
        ]
        assert e["fallbacks"] == [], e["warnings"]
        assert e["weights_bytes"], "the builder did not report its weights memory"
        engines[precision] = e
    if flags:  # --sdk_compatible_model: both outputs upsampled x4 (stride 8 -> 2) inside the graph
        small = read_onnx_metadata(tmp_path / "fp32.onnx")["output_shapes"]
        assert all(s[2:] == [h // 2, w // 2] for s in small), small
    # the weights are stored in the asked precision: fp16 takes half the bytes of fp32; int8 a quarter plus the
    # per-layer float biases, scales and alignment, which weigh more in these tiny nets (measured 0.30-0.43;
    # int8 weights kept in float would give ~1)
    w32 = engines["fp32"]["weights_bytes"]
    assert engines["fp16"]["weights_bytes"] <= 0.55 * w32
    assert engines["int8"]["weights_bytes"] <= 0.5 * w32


@pytest.mark.parametrize("task", list(BUILDERS))
def test_engine_without_gpu_is_one_clear_error(capsys, tmp_path, tlk_models, task):
    from tlkit_tensorrt.runner import available

    if available() is None:
        pytest.skip("engines can run here (GPU present): nothing to refuse")
    model, _ = tlk_models[task]
    ok(capsys, task, "export", "-m", model, "-o", tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    ok(capsys, "tensorrt", "convert", tmp_path / "m.onnx", "-e", engine, "-m", 2)
    images = tlk_models["cal_images"]
    spec = tmp_path / "spec.yaml"  # what evaluate needs to get as far as loading the model
    spec.write_text(
        {
            "classification": f"dataset_config: {{val_dataset_path: {images}}}\n",
            "detection": "model_config: {arch: resnet, n_layers: 10}\n",
            "pose": "model: {arch: mobilenet_v2}\n",
        }[task]
    )
    evaluate = ("evaluate", "-e", spec, "-r", tmp_path / "eval", "-m", engine)
    if task == "pose":
        evaluate += ("--annotations", tmp_path / "person_keypoints.json", "--image_root", images)
    for args in (("inference", "-r", tmp_path / "infer", "-m", engine, "-d", images / "a"), evaluate):
        code, out, err = tlkit(capsys, task, *args)
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out + err, err
        assert lines[0].startswith("error: ") and str(engine.name) in lines[0] and "GPU" in lines[0], lines[0]


@pytest.mark.parametrize("task", list(BUILDERS))
def test_int8_engine_from_a_qat_model(capsys, tmp_path, tlk_models, task):
    """Quantization-aware training's export: `export --data_type int8` with no calibration data (the learned
    ranges), then `tensorrt convert -t int8` builds an int8 engine from it, as from a calibrated export."""
    import mxnet as mx

    from tlkit.export.calibration import read_trt_cache
    from tlkit.model_io import load_net, save_net
    from tlkit.qat import calibrate_qat, prepare_qat, qat_meta

    model, meta = tlk_models[task]
    net, _ = load_net(model)
    qnet, points = prepare_qat(net, meta["input_shape"])  # what the engine trains with enable_qat
    rs = np.random.RandomState(0)
    calibrate_qat(qnet, points, [rs.normal(0, 1, (2, *meta["input_shape"])).astype(np.float32)], mx.cpu())
    qat_model = save_net(tmp_path / "qat.tlk", qnet, {**meta, "qat": qat_meta(points)})
    onnx_path = tmp_path / "qat_int8.onnx"
    out = ok(capsys, task, "export", "-m", qat_model, "-o", onnx_path, "--data_type", "int8")
    assert "learned ranges of quantization-aware training" in out
    assert len(read_trt_cache(tmp_path / "cal.bin")) == len(points)  # TLT's default cache, beside the ONNX
    c, h, w = meta["input_shape"]
    profile = f"input,1x{c}x{h}x{w},2x{c}x{h}x{w},{MAX_BATCH}x{c}x{h}x{w}"
    engines = {}
    for precision, path in (("int8", onnx_path), ("fp32", tmp_path / "fp32.onnx")):
        if precision == "fp32":
            ok(capsys, task, "export", "-m", qat_model, "-o", path)
        header = json.loads(
            ok(
                capsys,
                "tensorrt",
                "convert",
                path,
                "-t",
                precision,
                "-p",
                profile,
                "-e",
                tmp_path / f"{precision}.engine",
                "--json",
            )
        )
        engines[precision] = header["engine"]
    e = engines["int8"]
    assert e["precision"] == "int8" and e["qdq"] is True and e["fallbacks"] == [], e["warnings"]
    assert e["weights_bytes"] <= 0.5 * engines["fp32"]["weights_bytes"]  # int8 weights, no layer kept in float
