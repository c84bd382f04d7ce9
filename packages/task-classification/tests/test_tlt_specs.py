"""NVIDIA's own TLT/TAO classification specs (tests/data/tlt, unmodified): they load, resolve to what TLT
means, round-trip through `spec import`, and the tutorial spec trains 1 epoch on tiny data (paths overridden);
evaluate without -r prints and writes nothing."""

from pathlib import Path

import pytest

from tlkit.config import read_spec
from tlkit.errors import SpecError
from tlkit.testing.plugins import run_tlkit
from tlkit.testing.specs import files_under, import_round_trip
from tlkit_classification.config import ClassificationConfig

DATA = Path(__file__).parent / "data" / "tlt"
TLT_SPECS = sorted(p for p in DATA.iterdir() if p.suffix in (".cfg", ".txt"))


def test_the_test_data_is_there():
    assert {p.name for p in TLT_SPECS} >= {"classification_spec.cfg", "classification_retrain_spec.cfg"}
    assert (DATA / "LICENSE").read_text().lstrip().startswith("Apache License") and (DATA / "NOTICE.md").is_file()


@pytest.mark.parametrize("path", TLT_SPECS, ids=lambda p: p.name)
def test_tlt_specs_load_and_round_trip_through_spec_import(path, tmp_path):
    loaded, _, text = import_round_trip(path, ClassificationConfig, tmp_path / "spec.yaml")
    assert loaded.format == "prototext" and loaded.resolved.tlt
    assert loaded.warnings == []  # nothing these specs use is missing in tlkit
    assert "# TLT train_config.train_dataset_path" in text


def test_tutorial_spec_means_what_tlt_means():
    c = read_spec(DATA / "classification_spec.cfg", ClassificationConfig).config
    m, t, a = c.model, c.train_config, c.augmentation_config
    assert (m.arch, m.n_layers, m.freeze_blocks, m.input_image_size) == ("resnet", 18, [0, 1], "3,224,224")
    assert (m.use_batch_norm, m.all_projections) == (True, True)
    assert m.use_pooling is False  # TLT's proto default (tlkit's own default is true)
    assert c.dataset_config.train_dataset_path == "/workspace/tao-experiments/data/split/train"
    assert c.dataset_config.val_dataset_path == "/workspace/tao-experiments/data/split/val"
    assert (t.optimizer.type, t.optimizer.momentum, t.optimizer.nesterov) == ("sgd", 0.9, False)
    assert (t.batch_size_per_gpu, t.n_epochs, t.n_workers) == (64, 80, 16)
    assert (t.reg_config.type, t.reg_config.weight_decay) == ("L2", 5e-5)
    # TLT's step schedule decays continuously by gamma every step_size % of training: 10 % of 80 epochs
    assert (t.lr_config.type, t.lr_config.learning_rate, t.lr_config.step_size, t.lr_config.gamma) == (
        "exponential",
        0.006,
        8.0,
        0.1,
    )
    assert (a.preprocess_mode, a.enable_random_crop, a.enable_center_crop, a.mixup_alpha, a.label_smoothing) == (
        "caffe",
        True,
        True,
        0.1,
        0.0,
    )
    assert (c.eval_config.top_k, c.eval_config.batch_size, c.eval_config.enable_center_crop) == (3, 256, True)


def test_makenet_schedules_soft_anneal_and_cosine():
    c = read_spec(DATA / "makenet_default_spec.txt", ClassificationConfig).config
    lr = c.train_config.lr_config
    assert (lr.type, lr.learning_rate, lr.soft_start, lr.annealing_points, lr.annealing_divider) == (
        "soft_anneal",
        0.05,
        0.056,
        [0.3, 0.6, 0.8],
        10,
    )
    assert lr.min_learning_rate == 3e-4  # TLT's soft start begins at 3e-4
    assert c.model.arch == "squeezenet" and c.model.dropout == 1e-3
    c = read_spec(DATA / "makenet_efficientnet_b0_imagenet2012.txt", ClassificationConfig).config
    lr = c.train_config.lr_config
    assert (lr.type, lr.learning_rate, lr.min_lr_ratio, lr.warmup_epochs) == ("cosine", 0.05, 0.001, 0.0)
    assert c.model.resize_interpolation_method == "bicubic" and c.model.retain_head is True


def test_tlt2_and_unsupported_keys(tmp_path):
    spec = tmp_path / "tlt2.txt"
    spec.write_text(
        'model_config { arch: "resnet" n_layers: 10 input_image_size: "3,64,64" use_bias: true\n'
        '  activation { activation_type: "swish" } }\n'
        'train_config { optimizer: "adam" n_epochs: 10 lr_config { cosine { learning_rate: 0.1 soft_start: 0.2 } }\n'
        '  reg_config { type: "None" scope: "Conv2D,Dense,BatchNormalization" weight_decay: 1e-5 }\n'
        '  image_mean { key: "l" value: 117.3 } model_parallelism: [0.5, 0.5] }\n'
    )
    loaded = read_spec(spec, ClassificationConfig)
    c = loaded.config
    assert c.train_config.optimizer.type == "adam"  # TLT 2.0's optimizer: "adam"
    assert (c.train_config.lr_config.type, c.train_config.lr_config.warmup_epochs) == (
        "cosine",
        2.0,
    )  # 0.2 of 10 epochs
    assert c.train_config.reg_config.type == "none"
    assert c.augmentation_config.image_mean.g == 117.3  # a gray model's l
    warned = "\n".join(loaded.warnings)
    for key in (
        "model_config.use_bias",
        "model_config.activation",
        "train_config.reg_config.scope",
        "train_config.model_parallelism",
    ):
        assert f"{key}: " in warned
    assert "Conv2D and Dense kernels only" in warned
    spec.write_text('model_config { arch: "resnet" }\ntrain_config { lr_config { stepp { learning_rate: 0.1 } } }\n')
    with pytest.raises(
        SpecError, match=r"tlt2.txt:2: train_config.lr_config.stepp: unknown key \(did you mean 'step'\?\)"
    ):
        read_spec(spec, ClassificationConfig)


def test_tutorial_spec_trains_and_evaluates_without_results_dir(shapes, tmp_path):
    """The NVIDIA tutorial spec, unchanged: only the data paths (TLT's own key names), the epochs and the
    pretrained file are overridden on the command line."""
    spec = DATA / "classification_spec.cfg"
    out = tmp_path / "train"
    p = run_tlkit(
        [
            "classification",
            "train",
            "-e",
            str(spec),
            "-r",
            str(out),
            "--gpus",
            "0",
            f"train_config.train_dataset_path={shapes / 'train'}",
            f"train_config.val_dataset_path={shapes / 'val'}",
            "train_config.n_epochs=1",
            "train_config.pretrained_model_path=null",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "epoch 1/1" in p.stdout and (out / "weights" / "model.tlk").is_file()
    saved = (out / "experiment_spec.yaml").read_text()  # the resolved spec, in tlkit's layout
    assert "dataset_config:" in saved and "train_dataset_path:" in saved and "type: exponential" in saved

    before = files_under(tmp_path)
    p = run_tlkit(
        [
            "classification",
            "evaluate",
            "-e",
            str(spec),
            "-m",
            str(out / "weights" / "model.tlk"),
            "--gpus",
            "0",
            f"eval_config.eval_dataset_path={shapes / 'val'}",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "Evaluation Top 1 accuracy" in p.stdout and "Confusion Matrix" in p.stdout
    assert files_under(tmp_path) == before  # TLT's evaluate without -r: printed, nothing written
