"""The spec: TLT's keys, model_config spelled as in TLT, errors with key path and line."""

import pytest

from tlkit.config import load_spec, save_resolved_spec
from tlkit.errors import SpecError
from tlkit_classification.config import ClassificationConfig, parse_image_size


def write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_model_config_section_reads_and_writes_under_its_tlt_name(tmp_path):
    p = write(tmp_path, "model_config:\n  arch: resnet\n  n_layers: 18\n  input_image_size: 3,64,96\n")
    cfg = load_spec(p, ClassificationConfig)
    assert cfg.model.arch == "resnet" and cfg.model.n_layers == 18
    assert cfg.model.input_shape == (3, 64, 96)
    out = save_resolved_spec(cfg, tmp_path / "r")
    text = out.read_text()
    assert "\nmodel_config:\n" in text and "model_\n" not in text
    assert load_spec(out, ClassificationConfig) == cfg


def test_unknown_key_names_path_line_and_suggestion(tmp_path):
    p = write(tmp_path, "model_config:\n  arch: resnet\n  dropuot: 0.1\n")
    with pytest.raises(SpecError) as e:
        load_spec(p, ClassificationConfig)
    msg = str(e.value)
    assert f"{p}:3: model_config.dropuot: unknown key (did you mean 'dropout'?)" in msg
    assert "\n" not in msg


def test_bad_values_name_the_key_and_line(tmp_path):
    p = write(tmp_path, "augmentation_config:\n  preprocess_mode: keras\nmodel_config:\n  input_image_size: 3,64\n")
    with pytest.raises(SpecError) as e:
        load_spec(p, ClassificationConfig)
    msg = str(e.value)
    assert f"{p}:2: augmentation_config.preprocess_mode" in msg
    assert f"{p}:4: model_config.input_image_size" in msg and "expected 'C,H,W'" in msg


def test_override_errors_name_the_override():
    with pytest.raises(SpecError, match=r"override 'model_config.dropout=1.5'.*model_config.dropout"):
        load_spec(None, ClassificationConfig, ["model_config.dropout=1.5"])


@pytest.mark.parametrize("text,expected", [("3,224,224", (3, 224, 224)), (" 1, 32 ,48", (1, 32, 48))])
def test_parse_image_size(text, expected):
    assert parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["224,224", "3,a,224", "2,64,64", "3,8,8"])
def test_parse_image_size_rejects(text):
    with pytest.raises(ValueError):
        parse_image_size(text)


def test_image_extensions_normalised():
    cfg = load_spec(None, ClassificationConfig, ["dataset_config.image_extensions=[JPG, .Png]"])
    assert cfg.dataset_config.image_extensions == [".jpg", ".png"]
