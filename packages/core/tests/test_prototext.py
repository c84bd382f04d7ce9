"""The protobuf text format parser (TLT's .txt/.cfg specs), without schemas: values, lines, errors."""

import math

import pytest

from tlkit.config import read_spec_source, sniff_format
from tlkit.errors import SpecError
from tlkit.prototext import looks_like_prototext, parse

TEXT = """\
# a comment line
model_config {
  arch: "resnet",            # ',' after a value is allowed
  n_layers: 18;
  freeze_blocks: 0
  freeze_blocks: 1
  input_image_size: '3,224,224'
  batch_norm_config: { momentum: 0.9 epsilon: 1e-3 }
}
training_config <
  num_epochs: 0x10
  flags: [1, -2.5, .5, 2.f, inf, -inf]
  enabled: True
  off: false
  mode: INTEGRATE
>
names: ["val2017", "train2017"]
empty {}
target_class_mapping { key: "car" value: "car" }
target_class_mapping { key: "van" value: "car" }
"""


def tree_of(text, repeated=("model_config.freeze_blocks", "target_class_mapping")):
    return parse(text, "spec.txt").to_tree(lambda p: ".".join(p) in repeated, "spec.txt")


def test_values_nesting_and_repeated_fields():
    tree, lines = tree_of(TEXT)
    m = tree["model_config"]
    assert m["arch"] == "resnet" and m["n_layers"] == 18 and m["input_image_size"] == "3,224,224"
    assert m["freeze_blocks"] == [0, 1]
    assert m["batch_norm_config"] == {"momentum": 0.9, "epsilon": 1e-3}
    t = tree["training_config"]
    assert t["num_epochs"] == 16
    assert t["flags"][:4] == [1, -2.5, 0.5, 2.0] and t["flags"][4] == math.inf and t["flags"][5] == -math.inf
    assert t["enabled"] is True and t["off"] is False and t["mode"] == "INTEGRATE"
    assert tree["names"] == ["val2017", "train2017"]
    assert tree["empty"] == {}
    assert tree["target_class_mapping"] == [{"key": "car", "value": "car"}, {"key": "van", "value": "car"}]
    # every key (and list item) keeps its line
    assert lines[("model_config",)] == 2 and lines[("model_config", "arch")] == 3
    assert lines[("model_config", "freeze_blocks", 1)] == 6
    assert lines[("training_config", "mode")] == 15
    assert lines[("target_class_mapping", 1, "value")] == 20


def test_a_repeated_field_given_once_is_a_list():
    tree, _ = tree_of("model_config { freeze_blocks: 2 }\n")
    assert tree["model_config"]["freeze_blocks"] == [2]


def test_strings_escapes_and_concatenation():
    tree, _ = tree_of(
        r'''a: "tab\tquote\" back\\ nl\n" b: 'it\'s' c: "x" 'y' "z" d: "\101\x42" e: "caf\xc3\xa9"'''
        r''' f: "# not a comment"'''
    )
    assert tree == {
        "a": 'tab\tquote" back\\ nl\n',
        "b": "it's",
        "c": "xyz",
        "d": "AB",
        "e": "café",
        "f": "# not a comment",
    }


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'model_config {\n  arch: "resnet"\n',
            r"spec.txt:3: expected '}' to close the message opened at line 1, got the end of the file",
        ),
        ("a: 1\nb:\n}\n", r"spec.txt:3: expected a value .* got '}'"),
        ("a 1\n", r"spec.txt:1: expected ':' or '\{' after 'a', got '1'"),
        ("a: 1\n  @\n", r"spec.txt:2: unexpected character '@'"),
        ('a: "unterminated\n', r"spec.txt:1: unexpected character '\"'"),
        ("a: [1, 2\n", r"spec.txt:2: expected ',' or '\]' in the list opened at line 1"),
        ('a: "\\q"\n', r"spec.txt:1: unknown escape '\\q'"),
        ('model_config { arch: "a"\n arch: "b" }\n', r"spec.txt:2: model_config.arch: given twice \(first at line 1\)"),
    ],
)
def test_syntax_errors_name_file_and_line(text, message):
    with pytest.raises(SpecError, match=message):
        tree_of(text)


def test_format_is_sniffed_by_content(tmp_path):
    assert sniff_format(TEXT) == "prototext" and looks_like_prototext(TEXT)
    assert sniff_format("train_config:\n  n_epochs: 3\n") == "yaml"
    assert sniff_format('{"a": {"b": 1}}') == "yaml"  # JSON is YAML
    assert sniff_format('random_seed: 42\narch: "resnet",\n') == "prototext"  # not YAML, but protobuf text
    assert sniff_format("a: [1,\n") == "yaml"  # neither: the YAML error is the one reported
    p = tmp_path / "spec.cfg"
    p.write_text(TEXT)
    src = read_spec_source(p)
    assert src.format == "prototext" and src.tree["model_config"]["arch"] == "resnet"
