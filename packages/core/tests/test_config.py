"""Spec files: validation errors name the key path and the line; overrides; defaults; resolved spec saved."""

import pytest
import yaml

from tlkit.config import TaskConfig, default_spec_yaml, load_spec, save_resolved_spec, spec_reference_markdown
from tlkit.errors import SpecError


def write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_valid_spec_and_defaults(tmp_path):
    cfg = load_spec(write(tmp_path, "train_config:\n  n_epochs: 3\n  optimizer:\n    type: adam\n"), TaskConfig)
    assert cfg.train_config.n_epochs == 3
    assert cfg.train_config.optimizer.type == "adam"
    assert cfg.train_config.batch_size_per_gpu == 32  # default filled in


def test_misspelled_key_names_path_line_and_suggestion(tmp_path):
    p = write(tmp_path, "train_config:\n  n_epochs: 3\n  optimizer:\n    type: sgd\n    momentun: 0.8\n")
    with pytest.raises(SpecError) as e:
        load_spec(p, TaskConfig)
    msg = str(e.value)
    assert msg.startswith(f"{p}:5: train_config.optimizer.momentun: unknown key (did you mean 'momentum'?)")


def test_wrong_type_and_range_errors_name_line(tmp_path):
    p = write(tmp_path, "train_config:\n  n_epochs: many\n  batch_size_per_gpu: 0\n")
    with pytest.raises(SpecError) as e:
        load_spec(p, TaskConfig)
    lines = sorted(str(e.value).splitlines())
    assert len(lines) == 2
    assert lines[0].startswith(f"{p}:2: train_config.n_epochs: Input should be a valid integer")
    assert lines[1].startswith(f"{p}:3: train_config.batch_size_per_gpu: Input should be greater than or equal to 1")


def test_bad_choice_lists_error(tmp_path):
    p = write(tmp_path, "train_config:\n  lr_config:\n    type: linear\n")
    with pytest.raises(SpecError, match=r":3: train_config.lr_config.type: Input should be 'constant'"):
        load_spec(p, TaskConfig)


def test_invalid_yaml_reports_line(tmp_path):
    p = write(tmp_path, "train_config:\n  n_epochs: [1,\n")
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: not valid YAML"):
        load_spec(p, TaskConfig)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(SpecError, match="expected a mapping of sections"):
        load_spec(write(tmp_path, "- a\n- b\n"), TaskConfig)


def test_missing_file():
    with pytest.raises(SpecError, match="nope.yaml: spec file not found"):
        load_spec("nope.yaml", TaskConfig)


def test_overrides_apply_and_are_blamed(tmp_path):
    p = write(tmp_path, "train_config:\n  n_epochs: 3\n")
    cfg = load_spec(p, TaskConfig, ["train_config.n_epochs=7", "train_config.optimizer.type=rmsprop"])
    assert cfg.train_config.n_epochs == 7 and cfg.train_config.optimizer.type == "rmsprop"
    with pytest.raises(
        SpecError,
        match=r"override 'train_config.n_epochz=1': train_config.n_epochz: unknown key \(did you mean 'n_epochs'\?\)",
    ):
        load_spec(p, TaskConfig, ["train_config.n_epochz=1"])
    with pytest.raises(SpecError, match="expected key=value"):
        load_spec(p, TaskConfig, ["train_config.n_epochs"])


def test_default_spec_is_complete_commented_and_valid(tmp_path):
    text = default_spec_yaml(TaskConfig, "header line")
    assert text.startswith("# header line")
    assert "n_epochs: 10  # number of epochs" in text
    assert yaml.safe_load(text) == TaskConfig().model_dump(mode="json")
    assert load_spec(write(tmp_path, text), TaskConfig) == TaskConfig()


def test_resolved_spec_round_trips(tmp_path):
    cfg = load_spec(None, TaskConfig, ["train_config.n_epochs=4"])
    out = save_resolved_spec(cfg, tmp_path)
    assert load_spec(out, TaskConfig) == cfg


def test_reference_markdown_lists_every_key():
    md = spec_reference_markdown(TaskConfig, "Shared")
    for key in (
        "train_config.n_epochs",
        "train_config.optimizer.momentum",
        "train_config.lr_config.annealing_points",
        "train_config.early_stopping.patience",
    ):
        assert f"`{key}`" in md


def test_duplicate_keys_and_non_utf8_bytes_are_spec_errors(tmp_path):
    """YAML keeps the last of two equal keys silently; a latin-1 byte is a UnicodeDecodeError: both one line."""
    from tlkit.config import TaskConfig, load_spec
    from tlkit.errors import SpecError

    p = tmp_path / "spec.yaml"
    p.write_text("train_config:\n  n_epochs: 3\n  optimizer:\n    type: adam\n  n_epochs: 30\n")
    with pytest.raises(SpecError, match=rf"^{p}:5: train_config\.n_epochs: duplicate key \(first given at line 2\)"):
        load_spec(p, TaskConfig)
    p.write_text("a: &base {n_epochs: 3}\ntrain_config:\n  <<: *base\n  n_epochs: 4\n")  # a merge key may repeat keys
    with pytest.raises(SpecError, match="a: unknown key"):  # (a is not a section: the merge itself is fine)
        load_spec(p, TaskConfig)
    p.write_bytes(b"train_config:\n  n_epochs: 3 # \xe9t\xe9\n")
    with pytest.raises(SpecError, match=rf"^{p}:2: not UTF-8 text \(byte 0xe9 at column 17\); save the spec as UTF-8$"):
        load_spec(p, TaskConfig)
    with pytest.raises(SpecError, match=rf"^{tmp_path}: is a folder; expected a YAML spec file$"):
        load_spec(tmp_path, TaskConfig)
