"""`tlkit classification export` through the CLI (core's export with the classification task installed): file
modes of every artefact, the DeepStream secondary config, Triton repos for each platform."""

import os
import stat

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from tlkit.testing.export import read_deepstream_config

CLASSES = ["rbc", "wbc", "platelet"]


def test_export_cli_writes_readable_artefacts_and_triton_plans(tmp_path, monkeypatch):
    """Every exported artefact is 0644 under umask 022 (services running as another user read them); the CLI's
    --triton_platform tensorrt_plan builds the engine with the installed TensorRT flavour."""
    from tlkit.cli import main
    from tlkit.model_io import save_net

    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))
    tlk = save_net(
        tmp_path / "m.tlk",
        net,
        {"task": "classification", "arch": "tiny", "classes": CLASSES, "input_shape": [3, 16, 16]},
        as_graph=True,
    )
    images = tmp_path / "cal"
    images.mkdir()
    import cv2

    for i in range(4):
        cv2.imwrite(str(images / f"{i}.png"), np.random.RandomState(i).randint(0, 255, (20, 20, 3)).astype(np.uint8))
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        for args in (
            ["--gen_triton_repo", out / "repo"],
            [
                "--data_type",
                "int8",
                "--cal_image_dir",
                images,
                "--batches",
                2,
                "--batch_size",
                2,
                "--cal_cache_file",
                out / "cal.bin",
                "--gen_ds_config",
                "--ds_secondary",
            ],
        ):
            name = "int8.onnx" if "int8" in args else "m.onnx"
            try:
                main(["classification", "export", "-m", str(tlk), "-o", str(out / name), *map(str, args)])
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {"m.onnx", "int8.onnx", "cal.bin", "nvinfer_config.txt", "labels.txt", "config.pbtxt", "model.onnx"} <= {
            p.name for p in files
        }
        modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert set(modes.values()) == {"0o644"}, modes
        cfg = read_deepstream_config(out / "nvinfer_config.txt")["property"]
        assert cfg["process-mode"] == "2" and cfg["network-mode"] == "1"
    finally:
        os.umask(old)
    try:
        import tlkit_tensorrt.api as trt_api

        trt_api.load_api()
    except Exception:  # no TensorRT flavour here: the onnxruntime repo above is what can be checked
        return
    from tlkit.testing.export import parse_triton_config

    try:
        main(
            [
                "classification",
                "export",
                "-m",
                str(tlk),
                "-o",
                str(tmp_path / "trt.onnx"),
                "--gen_triton_repo",
                str(tmp_path / "trt_repo"),
                "--triton_platform",
                "tensorrt_plan",
            ]
        )
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    cfg = parse_triton_config(tmp_path / "trt_repo" / "tiny" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and list(cfg.input[0].dims) == [3, 16, 16]
    plan = tmp_path / "trt_repo" / "tiny" / "1" / "model.plan"
    assert plan.stat().st_size > 1000 and plan.read_bytes()[:6] != b"TLKTRT"  # the bare plan, not tlkit's header
