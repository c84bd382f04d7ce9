"""A third-party plugin's backbone is picked up by the existing tasks: classification through the real CLI:
train with `model_config.arch=tinynet`, then prune and export the result; it passes core's backbone check
(`tlkit.testing.backbones`) and builds a pose network."""

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
    r = run_tlkit(["classification", "train", "-e", str(spec), "-r", str(out), "--gpus", "0", *overrides],
                  example_plugin_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    model = out / "weights" / "model.tlk"
    meta = json.loads(zipfile.ZipFile(model).read("meta.json"))
    assert meta["arch"] == "tinynet" and meta["task"] == "classification"
    status = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "SUCCESS"

    pruned = tmp_path / "pruned.tlk"
    r = run_tlkit(["classification", "prune", "-m", str(model), "-o", str(pruned), "-pth", "0.5", "-pg", "2", "-nf", "2"],
                  example_plugin_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Pruning ratio (pruned model / original model):" in r.stdout

    onnx_path = tmp_path / "m.onnx"
    r = run_tlkit(["classification", "export", "-m", str(pruned), "-o", str(onnx_path), "-r", str(tmp_path / "exp")],
                  example_plugin_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert onnx_path.stat().st_size > 0


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
