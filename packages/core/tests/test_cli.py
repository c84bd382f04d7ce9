"""The CLI's own behaviour: version, help without MXNet, spec commands, errors as one line + exit code."""

import subprocess
import sys
from importlib.metadata import version

from tlkit.cli import expand_multi_values
from tlkit.testing.plugins import run_tlkit


def test_version_is_the_installed_distributions():
    """`tlkit --version` says what pip installed (tlkit-core's metadata), so the two never drift apart."""
    r = run_tlkit(["--version"])
    assert r.returncode == 0 and r.stdout.strip() == f"tlkit {version('tlkit-core')}"


def test_help_does_not_import_mxnet():
    code = "import sys; from tlkit.cli.app import build_app; build_app(); print('mxnet' in sys.modules, 'gluoncv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_expand_multi_values():
    argv = ["t", "prune", "-el", "a", "b", "-m", "x", "--gpu_index", "0", "1", "k=v"]
    assert expand_multi_values(argv, {"-el", "--gpu_index"}) == [
        "t",
        "prune",
        "-el",
        "a",
        "-el",
        "b",
        "-m",
        "x",
        "--gpu_index",
        "0",
        "--gpu_index",
        "1",
        "k=v",
    ]


def test_spec_validate_reports_missing_file(tmp_path):
    """A missing spec is said once, with or without --task (not as "no valid spec for any task")."""
    missing = tmp_path / "x.yaml"
    for extra in ([], ["--task", "nosuchtask"]):
        r = run_tlkit(["spec", "validate", str(missing), *extra])
        assert r.returncode != 0
        assert r.stderr == f"error: {missing}: spec file not found\n"


def test_spec_validate_reports_unknown_task(tmp_path):
    spec = tmp_path / "x.yaml"
    spec.write_text("train_config:\n  n_epochs: 2\n")
    r = run_tlkit(["spec", "validate", str(spec), "--task", "nosuchtask"])
    assert r.returncode != 0
    assert r.stderr.startswith("error: unknown task 'nosuchtask'") and r.stderr.count("\n") == 1


def _help_texts(app, columns: int = 80) -> dict[str, str]:
    """`--help` of every command and group below `app`, rendered at `columns` as in a terminal that wide."""
    import typer
    from typer.testing import CliRunner

    def walk(cmd, path):
        yield path
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    runner = CliRunner()
    out = {}
    for path in walk(typer.main.get_command(app), []):
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
        assert r.exit_code == 0, (path, r.output)
        out[" ".join(path)] = r.output
    return out


def test_every_help_fits_80_columns_with_whole_flag_names():
    """Core's own commands (a task's are checked with every package installed, tests/test_workspace.py)."""
    from tlkit.cli.app import build_app

    texts = _help_texts(build_app())
    assert {"", "plugins", "spec", "spec validate", "deploy", "model", "model list"} <= set(texts)
    for path, text in texts.items():
        assert max(map(len, text.splitlines())) <= 80, (path, text)
    assert "  --json " in texts["plugins"]
    # a group lists each command's whole first sentence, wrapped (click cuts it to one line with "...")
    for group in ("", "model", "spec"):
        commands = texts[group].split("Commands:")[1]
        assert not any(line.endswith("...") for line in commands.splitlines()), commands
    assert "push, verify) and model cards." in " ".join(texts[""].split())


def test_plugin_lines_wrap_without_cutting_names():
    from tlkit.cli.plugins_cmd import plugin_lines
    from tlkit.types import PluginInfo

    long = [f"architecture_number_{i}" for i in range(12)]
    infos = [
        PluginInfo("core", "tlkit-core", "1.2.3", "ok", {"architectures": long, "pruners": ["l2"]}),
        PluginInfo("broken", "tlkit-broken", "0.0.1", "failed", error="No module named 'a_very_long_module_name'"),
    ]
    lines = plugin_lines(infos, 60)
    assert lines[0] == "core  tlkit-core 1.2.3  ok" and "broken  tlkit-broken 0.0.1  FAILED" in lines
    assert max(map(len, lines)) <= 60
    text = " ".join(line.strip() for line in lines)
    assert all(f"{n}," in text or text.count(n) == 1 for n in long)  # every name whole, once
    assert "    pruners: l2" in lines and "    error: No module named 'a_very_long_module_name'" in lines


def test_plugins_command_fits_the_terminal():
    r = run_tlkit(["plugins"], env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("core  tlkit-core ") and lines[0].endswith("  ok")
    assert max(map(len, lines)) <= 80 and "efficientnet_lite0" in r.stdout
