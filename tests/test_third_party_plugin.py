"""A third-party plugin's backbone is picked up by the existing tasks: classification through the real CLI:
train with `model_config.arch=tinynet`, then prune and export the result; it passes core's backbone check
(`tlkit.testing.backbones`) and builds a pose network. Its pruner, exporter and detection dataset format are
run by `prune --pruner`, `export --format` and `dataset_convert --input_format`."""

import json
import zipfile

import pytest

from tlkit.testing.plugins import run_tlkit


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from tlkit_classification.demo_data import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root / "train", 8, 32, seed=0)
    make_shapes_dataset(root / "val", 3, 32, seed=1)
    return root


def test_classification_trains_prunes_and_exports_a_plugin_backbone(example_plugin_dir, shapes, tmp_path):
    out = tmp_path / "res"
    overrides = [
        "model_config.arch=tinynet",
        "model_config.input_image_size=3,32,32",
        f"dataset_config.train_dataset_path={shapes / 'train'}",
        f"dataset_config.val_dataset_path={shapes / 'val'}",
        "train_config.batch_size_per_gpu=8",
        "train_config.n_workers=0",
        "train_config.n_epochs=1",
    ]
    spec = tmp_path / "spec.yaml"
    spec.write_text("model_config:\n  arch: tinynet\n")
    r = run_tlkit(
        ["classification", "train", "-e", str(spec), "-r", str(out), "--gpus", "0", *overrides], example_plugin_dir
    )
    assert r.returncode == 0, r.stderr[-2000:]
    model = out / "weights" / "model.tlk"
    meta = json.loads(zipfile.ZipFile(model).read("meta.json"))
    assert meta["arch"] == "tinynet" and meta["task"] == "classification"
    status = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "SUCCESS"

    pruned = tmp_path / "pruned.tlk"
    r = run_tlkit(
        ["classification", "prune", "-m", str(model), "-o", str(pruned), "-pth", "0.5", "-pg", "2", "-nf", "2"],
        example_plugin_dir,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Pruning ratio (pruned model / original model):" in r.stdout

    onnx_path = tmp_path / "m.onnx"
    r = run_tlkit(
        ["classification", "export", "-m", str(pruned), "-o", str(onnx_path), "-r", str(tmp_path / "exp")],
        example_plugin_dir,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert onnx_path.stat().st_size > 0


def test_plugin_pruner_and_exporter_run_from_the_cli(example_plugin_dir, tmp_path):
    """`prune --pruner halve` and `export --format npz` call the example plugin's PrunerSpec / ExporterSpec;
    an unknown name is refused naming the installed ones."""
    import mxnet as mx
    import numpy as np
    from mxnet.gluon import nn

    from tlkit import model_io

    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(16, 3, padding=1),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.Conv2D(16, 3, padding=1),
        nn.Activation("relu"),
        nn.GlobalAvgPool2D(),
        nn.Dense(3),
    )
    net.initialize(mx.init.Xavier())
    model = model_io.save_net(
        tmp_path / "m.tlk",
        net,
        {"task": "classification", "input_shape": [3, 16, 16], "classes": ["a", "b", "c"]},
        as_graph=True,
    )
    pruned = tmp_path / "halved.tlk"
    r = run_tlkit(
        ["classification", "prune", "-m", str(model), "-o", str(pruned), "--pruner", "halve"], example_plugin_dir
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "example pruner: halving the parameters" in r.stdout
    ratio = model_io.read_meta(pruned)["pruning"]["pruning_ratio"]
    assert 0.3 < ratio <= 0.5 and f"Pruning ratio (pruned model / original model): {ratio}" in r.stdout

    r = run_tlkit(
        ["classification", "export", "-m", str(pruned), "-r", str(tmp_path), "--format", "npz"], example_plugin_dir
    )
    assert r.returncode == 0, r.stderr[-2000:]
    arrays = np.load(tmp_path / "halved.npz")  # the default name takes the exporter's suffix
    params = model_io.load_model(pruned).params
    assert sorted(arrays) == sorted(k.replace(":", "_") for k in params)
    np.testing.assert_array_equal(arrays["arg_" + net[0].weight.name], params["arg:" + net[0].weight.name].asnumpy())

    r = run_tlkit(
        ["classification", "prune", "-m", str(model), "-o", str(tmp_path / "x.tlk"), "--pruner", "halfe"],
        example_plugin_dir,
    )
    assert (
        r.returncode != 0 and "unknown pruner 'halfe'; did you mean 'halve'? Installed pruners: halve, l2." in r.stderr
    )
    r = run_tlkit(["classification", "export", "-m", str(pruned), "--format", "tflite"], example_plugin_dir)
    assert r.returncode != 0 and "unknown exporter 'tflite'. Installed exporters: npz, onnx." in r.stderr


def test_plugin_dataset_format_is_read_by_dataset_convert(example_plugin_dir, tmp_path):
    """`detection dataset_convert --input_format box_csv -i boxes.csv` reads through the example plugin's
    DatasetFormatSpec and writes what detection writes for its own formats."""
    import cv2
    import numpy as np

    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.full((40, 60, 3), 128, np.uint8))
    (tmp_path / "boxes.csv").write_text(
        "image,class,x1,y1,x2,y2\na.png,car,1,2,30,20\na.png,person,5,5,9,30\nb.png,car,10,10,50,35\n"
    )
    out = tmp_path / "kitti"
    r = run_tlkit(
        [
            "detection",
            "dataset_convert",
            "--input_format",
            "box_csv",
            "-i",
            str(tmp_path / "boxes.csv"),
            "--output_format",
            "kitti",
            "-o",
            str(out),
        ],
        example_plugin_dir,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    a = (out / "labels" / "a.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in a] == ["car", "person"]
    assert [float(v) for v in a[0].split()[4:8]] == [1, 2, 30, 20]
    assert (out / "labels" / "b.txt").read_text().split()[0] == "car"
    # the default output: RecordIO folds, split by the default partition
    r = run_tlkit(
        [
            "detection",
            "dataset_convert",
            "--input_format",
            "box_csv",
            "-i",
            str(tmp_path / "boxes.csv"),
            "-o",
            str(tmp_path / "rec" / "boxes"),
        ],
        example_plugin_dir,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "rec" / "boxes.json").read_text())
    assert manifest["classes"] == ["car", "person"] and sum(manifest["frames_per_fold"]) == 2

    r = run_tlkit(
        [
            "detection",
            "dataset_convert",
            "--input_format",
            "box_cvs",
            "-i",
            str(tmp_path / "boxes.csv"),
            "-o",
            str(tmp_path / "rec2"),
        ],
        example_plugin_dir,
    )
    assert r.returncode != 0
    assert (
        "unknown detection dataset format 'box_cvs'; did you mean 'box_csv'? Installed detection dataset "
        "formats: box_csv, coco, kitti, voc."
    ) in r.stderr


def test_the_example_plugin_backbone_passes_core_backbone_check_and_builds_pose(example_plugin_dir, monkeypatch):
    """The installed plugin's backbone, found through its entry point, runs the check core runs on its own."""
    from tlkit.registry import get_registry, reset_registry
    from tlkit.testing.backbones import check_backbone

    monkeypatch.syspath_prepend(str(example_plugin_dir))
    reset_registry()
    try:
        assert get_registry().architecture("tinynet").distribution == "tlkit-example-plugin"
        bb = check_backbone("tinynet")
        assert type(bb).__name__ == "TinyNet" and bb.block_names == [f"stage{i}" for i in range(5)]
        # pose takes it too (at stride 8): heatmaps and PAFs at 1/8 of the input
        import mxnet as mx

        from tlkit_pose.model import build_net

        net = build_net({"arch": "tinynet", "stages": 2, "stage_channels": 8, "stage_convs": 1})
        net.initialize(mx.init.Xavier())
        hm, paf = net(mx.nd.zeros((1, 3, 64, 96)))
        assert hm.shape == (1, 19, 8, 12) and paf.shape == (1, 38, 8, 12)
    finally:
        reset_registry()  # the next get_registry() rediscovers without the plugin directory
