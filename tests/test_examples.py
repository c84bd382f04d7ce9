"""examples/: every spec users can copy validates with `tlkit spec validate` (no warnings), the TLT-format
twins resolve to the same spec as their tlkit YAML, and `tlkit spec import` of each TLT example round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlkit.config import read_spec
from tlkit.lazy import resolve
from tlkit.registry import get_registry
from tlkit.testing.faults import run_cli

pytest.importorskip("tlkit_classification")
pytest.importorskip("tlkit_detection")
pytest.importorskip("tlkit_pose")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPECS = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".txt", ".cfg", ".json"))
TLT = [p for p in SPECS if p.stem.endswith("_tlt")]
# (tlkit YAML, TLT twin, overrides applied to both: the data paths, which each format spells its own way)
TWINS = [
    ("classification/resnet18.yaml", "classification/resnet18_tlt.cfg", []),
    (
        "detection/detectnet_v2_kitti.yaml",
        "detection/detectnet_v2_kitti_tlt.txt",
        ["dataset_config.data_sources=[{records_path: r.json}]"],
    ),
    ("detection/kitti_export.yaml", "detection/kitti_export_tlt.txt", []),
    (
        "pose/bpnet.yaml",
        "pose/bpnet_tlt.yaml",
        [
            "dataloader.train_records=r",
            "dataloader.train_annotations=null",
            "dataloader.train_images=null",
            "dataloader.val_annotations=v.json",
            "dataloader.val_images=v",
        ],
    ),
]


def model_of(path: Path):
    """The spec model of an example: its task's experiment spec, or its dataset_convert spec."""
    task = get_registry().task(path.parent.name)
    export = "export" in path.stem or "dataset_spec" in path.stem
    return resolve(task.dataset_spec_model if export else task.config_model)


def test_every_task_has_examples_in_both_formats():
    for task in ("classification", "detection", "pose"):
        names = [p.name for p in SPECS if p.parent.name == task]
        assert any(n.endswith(".yaml") and "_tlt" not in n for n in names) and any("_tlt" in n for n in names), names
    assert (EXAMPLES / "README.md").is_file()


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_validates_without_warnings(path, capsys):
    res = run_cli(capsys, "spec", "validate", path, "-t", path.parent.name)
    code, out, err = res.code, res.out, res.err
    assert code == 0, err
    assert f"valid {path.parent.name} " in out
    assert "warning" not in err, err


@pytest.mark.parametrize("yaml_name, tlt_name, overrides", TWINS, ids=[t[1] for t in TWINS])
def test_tlt_twin_is_the_same_spec(yaml_name, tlt_name, overrides):
    model = model_of(EXAMPLES / yaml_name)
    ours = read_spec(EXAMPLES / yaml_name, model, overrides).config
    theirs = read_spec(EXAMPLES / tlt_name, model, overrides).config
    assert ours.model_dump() == theirs.model_dump()


@pytest.mark.parametrize("path", TLT, ids=lambda p: p.name)
def test_spec_import_of_tlt_examples_round_trips(path, tmp_path, capsys):
    res = run_cli(capsys, "spec", "import", path, "-t", path.parent.name)
    code, out, err = res.code, res.out, res.err
    assert code == 0, err
    assert out.startswith(f"# tlkit {path.parent.name} ") and "# TLT " in out
    imported = tmp_path / "examples" / path.parent.name / f"{path.stem}.yaml"
    imported.parent.mkdir(parents=True)
    imported.write_text(out)
    model = model_of(path)
    assert read_spec(imported, model).config.model_dump() == read_spec(path, model).config.model_dump()
