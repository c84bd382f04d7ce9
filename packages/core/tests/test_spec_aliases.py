"""TLT key names resolved in one place: renames, moves, value transforms, maps, ignored keys, overrides, errors
with the TLT key path and line, and `spec import` round trips."""

from typing import ClassVar

import pytest
import yaml
from pydantic import Field

from tlkit.config import SpecModel, TaskConfig, read_spec
from tlkit.errors import SpecError
from tlkit.spec_aliases import (
    DROP,
    Alias,
    AliasTable,
    import_yaml,
    lower,
    regularizer_type,
    soft_start_annealing_aliases,
    unsupported,
)


class Box(SpecModel):
    min_height: float = 0.0
    max_height: float = 9999.0


class Eval(SpecModel):
    box: Box = Field(default_factory=Box)  # one default box, as tlkit's evaluation_box_config
    per_class_box: dict[str, Box] = Field(default_factory=dict)
    mode: str = "sample"


class Source(SpecModel):
    records_path: str = ""
    weight: float = 1.0


class Data(SpecModel):
    sources: list[Source] = Field(default_factory=list)
    class_map: dict[str, str] = Field(default_factory=dict)


def cm_to_mm(value, res):
    return value * 10 if res.tlt_format else value


def check_scale(value, res):
    if value != 35:
        res.warn("objective.scale", f"{value}: tlkit always uses 35", value)
    return DROP


TABLE = AliasTable(
    [
        Alias("training_config", "train_config"),
        Alias("training_config.num_epochs", ".n_epochs"),
        Alias("training_config.regularizer", "train_config.reg_config"),
        Alias("training_config.regularizer.type", ".type", regularizer_type),
        Alias("training_config.regularizer.weight", ".weight_decay"),
        *soft_start_annealing_aliases("training_config.learning_rate.soft_start_annealing_schedule"),
        Alias("training_config.learning_rate", "train_config.lr_config"),
        Alias("random_seed", "train_config.random_seed"),
        Alias("data.sources.tfrecords_path", ".records_path"),
        Alias("eval.box", "eval.per_class_box", when=dict, single=False),
        Alias("eval.mode", ".mode", lower),
        Alias("eval.length", "eval.box.max_height", cm_to_mm),
        Alias("objective", ".objective", check_scale),
        unsupported("training_config.visualizer", "tlkit plots by itself", ({"enabled": False},)),
        unsupported("training_config.enable_qat", "quantization-aware training", (False,)),
        unsupported("training_config.cost_scaling", "FP16 loss scaling", warn=False),
        Alias("exports", "export", single=True),
    ],
    repeated=["data.sources", "exports"],
    maps=["data.class_map", "eval.box"],
    tlt_defaults={"train_config.batch_size_per_gpu": (4, "proto default")},
    is_tlt_layout=lambda tree: "training_config" in tree,
)
# `eval.box` only in TLT's map form (key/value entries); tlkit's own `box` section passes unchanged
TABLE.by_path[("eval", "box")] = [
    Alias("eval.box", "eval.per_class_box", when=__import__("tlkit.spec_aliases").spec_aliases.TltMap)
]


class Export(SpecModel):
    root: str = ""


class Spec(TaskConfig):
    tlt_aliases: ClassVar[AliasTable] = TABLE
    data: Data = Field(default_factory=Data)
    eval: Eval = Field(default_factory=Eval)
    export: Export | None = None


TLT_TEXT = """\
random_seed: 7
training_config {
  num_epochs: 3
  learning_rate { soft_start_annealing_schedule {
    min_learning_rate: 1e-6 max_learning_rate: 1e-3 soft_start: 0.1 annealing: 0.7 } }
  regularizer { type: NO_REG weight: 3e-9 }
  visualizer { enabled: true }
  enable_qat: false
  cost_scaling { initial_exponent: 20.0 }
}
data {
  sources { tfrecords_path: "a/*" }
  class_map { key: "van" value: "car" }
  class_map { key: "car" value: "car" }
}
eval {
  mode: INTEGRATE
  length: 2
  box { key: "car" value { min_height: 20 } }
}
objective: 30
"""


def write(tmp_path, text, name="spec.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_tlt_text_resolves_into_tlkit_layout(tmp_path):
    loaded = read_spec(write(tmp_path, TLT_TEXT), Spec)
    c = loaded.config
    assert loaded.format == "prototext" and loaded.resolved.tlt
    assert c.train_config.random_seed == 7 and c.train_config.n_epochs == 3
    lr = c.train_config.lr_config
    assert (lr.type, lr.learning_rate, lr.min_learning_rate, lr.soft_start, lr.annealing) == (
        "soft_start_annealing",
        1e-3,
        1e-6,
        0.1,
        0.7,
    )
    assert (c.train_config.reg_config.type, c.train_config.reg_config.weight_decay) == ("none", 3e-9)
    assert c.data.sources == [Source(records_path="a/*")]  # repeated field given once -> a list; renamed inside it
    assert c.data.class_map == {"van": "car", "car": "car"}  # proto map entries -> dict
    assert c.eval.per_class_box == {"car": Box(min_height=20)} and c.eval.box == Box(max_height=20.0)
    assert c.eval.mode == "integrate"
    assert c.train_config.batch_size_per_gpu == 4  # TLT's value when absent (protobuf text only)
    # ignored keys: a warning unless the value is what tlkit does anyway; converters may warn about a part
    warnings = loaded.warnings
    assert (
        f"{tmp_path / 'spec.txt'}:7: training_config.visualizer: TLT key not implemented by tlkit, ignored: "
        "tlkit plots by itself" in warnings
    )
    assert any(w.endswith("objective.scale: 30: tlkit always uses 35") and ":21:" in w for w in warnings)
    assert len(warnings) == 2  # enable_qat false = tlkit's behaviour; cost_scaling has no effect (a note only)
    kinds = {i.key: i.kind for i in loaded.resolved.ignored}
    assert kinds == {
        "training_config.visualizer": "unsupported",
        "training_config.enable_qat": "neutral",
        "training_config.cost_scaling": "unused",
        "objective.scale": "differs",
    }


def test_value_transforms_depend_on_the_source_format(tmp_path):
    """A TLT unit conversion applies to TLT specs only: the same key in a tlkit YAML keeps its value."""
    c = read_spec(write(tmp_path, "eval { length: 2 }\n"), Spec).config
    assert c.eval.box.max_height == 20
    c = read_spec(write(tmp_path, "eval:\n  length: 2\n", "spec.yaml"), Spec).config
    assert c.eval.box.max_height == 2
    assert c.train_config.batch_size_per_gpu == 32  # no TLT defaults for YAML


def test_tlt_names_work_in_yaml_and_in_overrides(tmp_path):
    p = write(
        tmp_path, "training_config:\n  num_epochs: 5\ndata:\n  sources:\n    tfrecords_path: x\n", "spec.yaml"
    )  # repeated, given once
    c = read_spec(p, Spec, ["training_config.regularizer.type=L1", "random_seed=3"]).config
    assert (c.train_config.n_epochs, c.train_config.reg_config.type, c.train_config.random_seed) == (5, "L1", 3)
    assert c.data.sources[0].records_path == "x"
    # an override beats the file even when one uses TLT's name and the other tlkit's
    c = read_spec(p, Spec, ["train_config.n_epochs=1"]).config
    assert c.train_config.n_epochs == 1


def test_one_key_from_two_places_must_agree(tmp_path):
    p = write(tmp_path, "train_config:\n  n_epochs: 4\ntraining_config:\n  num_epochs: 5\n", "spec.yaml")
    with pytest.raises(
        SpecError,
        match=r"spec.yaml:4: training_config.num_epochs: sets train_config.n_epochs = 5, "
        r"but .*spec.yaml:2 \(train_config.n_epochs\) already set it to 4",
    ):
        read_spec(p, Spec)


def test_errors_name_the_tlt_key_and_its_line(tmp_path):
    p = write(
        tmp_path,
        "training_config {\n  num_epochs: 0\n  learning_rate { soft_start_anealing_schedule { soft_start: 0.1 } }\n}\n",
    )
    with pytest.raises(SpecError) as e:
        read_spec(p, Spec)
    msg = str(e.value)
    assert (
        f"{p}:2: training_config.num_epochs (tlkit: train_config.n_epochs): Input should be greater than or equal to 1"
        in msg
    )
    assert (
        f"{p}:3: training_config.learning_rate.soft_start_anealing_schedule: unknown key "
        "(did you mean 'soft_start_annealing_schedule'?)" in msg
    )
    assert "TLT keys here: soft_start_annealing_schedule." in msg
    with pytest.raises(
        SpecError, match=r"spec.txt:1: regularizer.type|training_config.regularizer.type: unknown regularizer type 'L3'"
    ):
        read_spec(write(tmp_path, "training_config { regularizer { type: L3 } }\n"), Spec)


def test_single_message_from_a_repeated_tlt_field(tmp_path):
    c = read_spec(write(tmp_path, 'exports { root: "r" }\n'), Spec).config
    assert c.export == Export(root="r")
    with pytest.raises(SpecError, match="tlkit takes one exports block, got 2"):
        read_spec(write(tmp_path, 'exports { root: "r" }\nexports { root: "s" }\n'), Spec)


def test_tlkit_yaml_passes_unchanged(tmp_path):
    text = "train_config:\n  n_epochs: 2\neval:\n  box:\n    min_height: 3\n  mode: sample\n"
    loaded = read_spec(write(tmp_path, text, "spec.yaml"), Spec)
    assert not loaded.resolved.tlt and not loaded.resolved.notes and not loaded.resolved.ignored
    assert loaded.config.eval.box.min_height == 3


def test_import_writes_commented_tlkit_yaml_that_round_trips(tmp_path):
    p = write(tmp_path, TLT_TEXT)
    loaded = read_spec(p, Spec)
    text = import_yaml(loaded.resolved, Spec, "imported")
    assert text.startswith("# imported\n# TLT keys not carried over:\n")
    assert "#   " + f"{p}:7: training_config.visualizer: TLT key not implemented by tlkit, ignored" in text
    assert "  n_epochs: 3  # TLT training_config.num_epochs\n" in text
    assert "  mode: integrate  # TLT eval.mode = 'INTEGRATE'\n" in text
    assert "batch_size_per_gpu: 4  # TLT's value when the key is absent: proto default" in text
    assert "  sources:\n    - records_path: a/*  # TLT data.sources[0].tfrecords_path\n" in text
    out = write(tmp_path, text, "imported.yaml")
    again = read_spec(out, Spec)
    assert again.format == "yaml" and not again.resolved.tlt
    assert again.config == loaded.config
    assert again.config.model_dump() == loaded.config.model_dump()
    assert yaml.safe_load(text)["eval"]["per_class_box"] == {"car": {"min_height": 20}}
