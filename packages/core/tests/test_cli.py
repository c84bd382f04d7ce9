"""The CLI's own behaviour: version, help without MXNet, spec commands, errors as one line + exit code."""

import subprocess
import sys

from tlkit.cli import expand_multi_values
from tlkit.testing.plugins import run_tlkit


def test_version():
    r = run_tlkit(["--version"])
    assert r.returncode == 0 and r.stdout.strip() == "tlkit 0.1.0"


def test_help_does_not_import_mxnet():
    code = "import sys; from tlkit.cli.app import build_app; build_app(); print('mxnet' in sys.modules, 'gluoncv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_expand_multi_values():
    argv = ["t", "prune", "-el", "a", "b", "-m", "x", "--gpu_index", "0", "1", "k=v"]
    assert expand_multi_values(argv, {"-el", "--gpu_index"}) == [
        "t", "prune", "-el", "a", "-el", "b", "-m", "x", "--gpu_index", "0", "--gpu_index", "1", "k=v"]


def test_spec_validate_reports_missing_file(tmp_path):
    r = run_tlkit(["spec", "validate", str(tmp_path / "x.yaml"), "--task", "nosuchtask"])
    assert r.returncode != 0
    assert r.stderr.startswith("error: unknown task 'nosuchtask'")
    assert "Traceback" not in r.stderr
