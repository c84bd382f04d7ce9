"""The commands through the real `tlkit` CLI (flags, exit codes, one-line errors)."""

from tlkit.testing.plugins import run_tlkit


def test_dataset_convert_split_via_cli(shapes, tmp_path):
    out = tmp_path / "split"
    p = run_tlkit(
        [
            "classification",
            "dataset_convert",
            "--mode",
            "split",
            "-i",
            str(shapes / "train"),
            "-o",
            str(out),
            "--ratios",
            "0.5,0.25,0.25",
            "--seed",
            "7",
        ]
    )
    assert p.returncode == 0, p.stderr
    assert sorted(d.name for d in out.iterdir()) == ["test", "train", "val"]
    assert len(list((out / "val" / "circle").iterdir())) == 3


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    p = run_tlkit(["classification", "dataset_convert", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: dataset directory not found"]
    p = run_tlkit(
        ["classification", "dataset_convert", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--ratios", "2,1"]
    )
    assert p.returncode != 0 and "--ratios '2,1'" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_spec_command_prints_the_classification_spec():
    p = run_tlkit(["spec", "default", "classification"])
    assert p.returncode == 0, p.stderr
    assert "model_config:" in p.stdout and "augmentation_config:" in p.stdout and "batch_norm_momentum" in p.stdout
