"""A command's context: `ctx.option` reads the OptionSpec default (each default written once), and
`tlkit.testing.make_context` builds the context the CLI would."""

from pathlib import Path

import pytest

from tlkit.cli.options import EXPORT_OPTIONS, with_defaults
from tlkit.context import CommandContext
from tlkit.errors import TlkitError
from tlkit.testing import make_context
from tlkit.types import CommandSpec, OptionSpec

OPTIONS = (
    OptionSpec("batch_size", ("-b", "--batch_size"), int, 16, "batch", min=1),
    OptionSpec("top_k", ("--top_k",), int, None, "default: the spec's", min=1),
    OptionSpec("mode", ("--mode",), str, "fast", "mode", choices=("fast", "exact")),
    OptionSpec("strict", ("--strict",), bool, False, "stop"),
    OptionSpec("excluded", ("-el",), str, (), "layers", multiple=True),
)
COMMAND = CommandSpec("go", run="x:y", options=OPTIONS)


def test_option_reads_the_given_value_else_the_optionspec_default():
    ctx = CommandContext(task="t", command="go", options={"batch_size": 4, "strict": False}, option_specs=OPTIONS)
    assert ctx.option("batch_size") == 4
    assert ctx.option("strict") is False and ctx.option("mode") == "fast" and ctx.option("excluded") == ()
    ctx = CommandContext(task="t", command="go", options={"batch_size": None}, option_specs=OPTIONS)
    assert ctx.option("batch_size") == 16  # None = not given
    # an option whose OptionSpec says "default: the spec's" takes the caller's fallback
    assert ctx.option("top_k") is None and ctx.option("top_k", 5) == 5
    assert CommandContext(task="t", command="go", options={"top_k": 2}, option_specs=OPTIONS).option("top_k", 5) == 2
    with pytest.raises(KeyError, match="tlkit t go has no option 'topk'"):
        ctx.option("topk")


def test_a_hand_built_context_finds_its_optionspecs_by_task_and_command():
    with pytest.raises(TlkitError, match="nosuchtask"):  # the registry's "unknown task" error
        CommandContext(task="nosuchtask", command="go").option("batch_size")


def test_with_defaults_fills_missing_and_none_and_keeps_the_rest():
    got = with_defaults(OPTIONS, {"batch_size": None, "mode": "exact", "other": 1})
    assert got == {"batch_size": 16, "top_k": None, "mode": "exact", "strict": False, "excluded": (), "other": 1}
    export = with_defaults(EXPORT_OPTIONS, {})
    assert (export["data_type"], export["batches"], export["static_batch_size"]) == ("fp32", 10, -1)


def test_make_context_builds_what_the_cli_builds(tmp_path):
    ctx = make_context("t", "go", command_spec=COMMAND, options={"excluded": "a,b", "top_k": 3}, results_dir=tmp_path)
    assert ctx.options == {"batch_size": 16, "top_k": 3, "mode": "fast", "strict": False, "excluded": ("a", "b")}
    assert ctx.option_specs == OPTIONS and ctx.results_dir == tmp_path and ctx.spec is None  # task not installed
    assert ctx.console.width == 120
    with pytest.raises(TlkitError, match=r"--mode: 'slow' is not one of fast, exact"):
        make_context("t", "go", command_spec=COMMAND, options={"mode": "slow"})
    with pytest.raises(TlkitError, match=r"--batch_size 0: expected a number >= 1"):
        make_context("t", "go", command_spec=COMMAND, options={"batch_size": 0})
    with pytest.raises(TlkitError, match="nosuchtask"):
        make_context("nosuchtask", "go")


def test_make_context_passes_a_spec_object_through():
    spec = object()
    ctx = make_context("t", "go", command_spec=COMMAND, spec=spec, model=Path("m.tlk"), gpus=0)
    assert ctx.spec is spec and ctx.spec_path is None and ctx.model == Path("m.tlk") and ctx.gpus == 0
