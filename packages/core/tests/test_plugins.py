"""Plugin discovery through real entry points: a worked third-party plugin and three broken ones."""

import json
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tlkit.testing.plugins import install_plugins, run_tlkit

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_project(name: str) -> dict:
    """[project] of a fixture plugin's pyproject.toml (its distribution name, version and requirements)."""
    return tomllib.loads((FIXTURES / "plugins" / name / "pyproject.toml").read_text())["project"]


def test_plugins_json_lists_ok_and_failed_with_reasons(plugin_dir):
    r = run_tlkit(["plugins", "--json"], plugin_dir)
    assert r.returncode == 0, r.stderr
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    assert infos["core"]["status"] == "ok" and infos["core"]["distribution"] == "tlkit-core"
    ex = infos["example"]
    example = fixture_project("example")
    assert (ex["status"], ex["distribution"], ex["version"]) == ("ok", example["name"], example["version"])
    assert ex["registers"]["tasks"] == ["counting"]
    assert ex["registers"]["architectures"] == ["tinynet"]
    assert "tlkit_register_commands" in ex["registers"]["hooks"]
    assert infos["broken"]["status"] == "failed"
    assert "No module named 'tensorrt_that_is_not_installed'" in infos["broken"]["error"]
    assert infos["typo"]["status"] == "failed"
    assert "unknown hook 'tlkit_register_task'" in infos["typo"]["error"]
    assert infos["old"]["status"] == "failed"
    required = Requirement(fixture_project("old")["dependencies"][0])
    assert infos["old"]["error"] == f"requires {required}, installed {version('tlkit-core')}"


def test_each_broken_plugin_costs_one_warning_line_and_the_cli_still_works(plugin_dir):
    r = run_tlkit(["--help"], plugin_dir)
    assert r.returncode == 0
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: plugin")]
    assert len(warnings) == 3, r.stderr
    broken = fixture_project("broken")
    assert any(f"'broken' ({broken['name']} {broken['version']})" in w for w in warnings)
    assert "counting" in r.stdout and "example-hello" in r.stdout


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_dir):
    r = run_tlkit(["plugins"], plugin_dir, env={"TLKIT_STRICT_PLUGINS": "1"})
    assert r.returncode != 0
    broken = fixture_project("broken")
    failed = f"error: plugin 'broken' ({broken['name']} {broken['version']}) failed to load: ModuleNotFoundError"
    assert failed in r.stderr


def test_disable_plugins_skips_named_ones(plugin_dir):
    r = run_tlkit(["plugins", "--json"], plugin_dir, env={"TLKIT_DISABLE_PLUGINS": "broken, typo,old,example"})
    assert r.returncode == 0
    assert "warning" not in r.stderr
    infos = {p["name"]: p["status"] for p in json.loads(r.stdout)}
    assert infos["broken"] == infos["typo"] == infos["old"] == infos["example"] == "disabled"


def test_third_party_task_runs_with_spec_overrides_options_and_stage_hooks(plugin_dir, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("counting_config:\n  target: 5\n")
    out = tmp_path / "res"
    r = run_tlkit(
        ["counting", "count", "-e", str(spec), "-r", str(out), "--step", "2", "counting_config.target=7"],
        plugin_dir,
        env={"TLKIT_DISABLE_PLUGINS": "broken,typo,old"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "count.json").read_text()) == [1, 3, 5, 7]
    events = [json.loads(x)["event"] for x in (out / "stage_events.jsonl").read_text().splitlines()]
    assert events == ["start:other", "end:other:ok"]


def test_plugin_top_level_command(plugin_dir):
    r = run_tlkit(["example-hello", "--name", "edge"], plugin_dir, env={"TLKIT_DISABLE_PLUGINS": "broken,typo,old"})
    assert r.returncode == 0 and "hello edge from tlkit-example-plugin" in r.stdout


def test_plugin_architecture_is_a_registered_backbone(plugin_dir):
    r = run_tlkit(["plugins", "--json"], plugin_dir)
    code = (
        "from tlkit.registry import get_registry; r = get_registry(); "
        "a = r.architecture('tinynet'); print(a.distribution, 'tinynet' in r.backbone_names('classification'))"
    )
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(plugin_dir), "TLKIT_DISABLE_PLUGINS": "broken,typo,old"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["tlkit-example-plugin", "True"], out.stderr
    assert r.returncode == 0


def test_two_plugins_registering_one_name_is_an_error_naming_both(plugin_dir, tmp_path):
    clash_dir = install_plugins([FIXTURES / "plugins" / "clash"], tmp_path / "clash")
    import os

    path = os.pathsep.join([str(clash_dir), str(plugin_dir)])
    r = run_tlkit(["--help"], None, env={"PYTHONPATH": path, "TLKIT_DISABLE_PLUGINS": "broken,typo,old"})
    assert r.returncode != 0
    assert "task 'counting' is registered twice" in r.stderr
    assert "tlkit-clash-example" in r.stderr and "tlkit-example-plugin" in r.stderr


def test_unknown_task_gets_did_you_mean_and_installed_list(plugin_dir):
    r = run_tlkit(["countng", "count"], plugin_dir, env={"TLKIT_DISABLE_PLUGINS": "broken,typo,old"})
    assert r.returncode != 0
    assert "unknown task 'countng'; did you mean 'counting'?" in r.stderr
    assert "Installed tasks:" in r.stderr and "counting" in r.stderr


@pytest.mark.parametrize("task,dist", [("pose", "tlkit-pose"), ("detection", "tlkit-detection")])
def test_missing_task_names_its_distribution(task, dist):
    r = run_tlkit([task, "train"], env={"TLKIT_DISABLE_PLUGINS": task})
    assert r.returncode != 0
    assert dist in r.stderr
