"""The `tlkit` command tree, built from the installed plugins.

Built-in commands (`plugins`, `spec`) cannot be shadowed. Every registered task becomes `tlkit <task>` with its
commands; each command gets TLT's common flags plus its own OptionSpecs, and trailing `key=value` spec overrides.
Nothing here imports MXNet: `tlkit --help` stays fast.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from tlkit import __version__
from tlkit.errors import PluginError, SpecError, TlkitError
from tlkit.types import CommandSpec, OptionSpec, Stage, StageResult, TaskSpec

BUILTIN_COMMANDS = ("plugins", "spec", "deploy", "model")

# The common flags, as (name, annotation, typer.Option) — TLT's names and short forms.
_COMMON = (
    (
        "experiment_spec",
        Optional[Path],
        ("-e", "--experiment_spec", "--experiment_spec_file"),
        "Experiment spec (YAML).",
    ),
    ("results_dir", Optional[Path], ("-r", "--results_dir"), "Directory for outputs, logs and status.json."),
    ("model", Optional[Path], ("-m", "--model", "--model_path"), "Model file (.tlk, .onnx, engine)."),
    ("output", Optional[Path], ("-o", "--output", "--output_file"), "Output file."),
    (
        "key",
        Optional[str],
        ("-k", "--key"),
        "Model key (accepted for TLT compatibility; tlkit files are not encrypted).",
    ),
    ("gpus", Optional[int], ("--gpus",), "Number of GPUs (0 = CPU; default: 1 if MXNet sees a GPU, else CPU)."),
    ("gpu_index", Optional[list[int]], ("--gpu_index",), "GPU indices, e.g. --gpu_index 0 1."),
)


# Process-level flags: CPU threads (any command) and multi-node training (train only; tlkit.distributed).
_RUNTIME = (
    (
        "num_threads",
        Optional[int],
        ("--num_threads",),
        "MXNet CPU threads (default: OMP_NUM_THREADS, else the cores this process may use).",
    ),
    ("num_nodes", Optional[int], ("--num_nodes",), "Train on N nodes (one process each; MXNet dist_sync). Default 1."),
    (
        "node_rank",
        Optional[int],
        ("--node_rank",),
        "This node's rank, 0..N-1 (0 runs the scheduler and writes results).",
    ),
    ("master", Optional[str], ("--master",), "host:port of node 0's scheduler (a free port), for --num_nodes > 1."),
)


def _option_param(opt: OptionSpec) -> inspect.Parameter:
    tp: Any = opt.type
    if opt.multiple:
        annotation: Any = Optional[list[tp]]
        default: Any = None
    elif opt.type is bool:
        annotation, default = bool, bool(opt.default)
    else:
        annotation, default = Optional[tp], opt.default
    help_text = opt.help
    if opt.choices:
        help_text = (help_text.rstrip(".") + ". " if help_text else "") + f"One of: {', '.join(opt.choices)}."
    flags = list(opt.flags)
    if opt.type is bool:
        flags = [f"{flags[0]}/--no-{flags[0].lstrip('-')}", *flags[1:]] if len(flags) == 1 else flags
    option = typer.Option(
        ... if opt.required else default, *flags, help=help_text, show_default=opt.default not in (None, ())
    )
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _make_command(task: TaskSpec, cmd: CommandSpec):
    params = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, *flags, help=h), annotation=ann
        )
        for name, ann, flags, h in _COMMON
    ]
    params.append(
        inspect.Parameter(
            "use_amp",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                False,
                "--use_amp",
                help="Automatic mixed precision (train only): float16 on GPUs, bfloat16 on AVX-512 CPUs.",
            ),
            annotation=bool,
        )
    )
    params += [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, *flags, help=h), annotation=ann
        )
        for name, ann, flags, h in _RUNTIME
    ]
    params += [_option_param(o) for o in cmd.options]
    params.append(
        inspect.Parameter(
            "overrides",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Argument(None, help="Spec overrides, e.g. train_config.n_epochs=5", show_default=False),
            annotation=Optional[list[str]],
        )
    )

    def command(**kwargs: Any) -> None:
        run_command(task, cmd, kwargs)

    # typer reads the signature (typeshed's FunctionType does not declare __signature__, which inspect honours)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = cmd.help or f"{cmd.name} ({task.name})"
    return command


def run_command(task: TaskSpec, cmd: CommandSpec, kwargs: dict[str, Any]) -> None:
    """Validate the flags and spec, build the CommandContext, fire the stage hooks, run the command."""
    from tlkit.config import load_spec
    from tlkit.context import CommandContext
    from tlkit.io import make_dir
    from tlkit.lazy import resolve
    from tlkit.threads import configure_threads

    overrides = list(kwargs.pop("overrides") or [])
    common = {name: kwargs.pop(name) for name, *_ in _COMMON}
    use_amp = kwargs.pop("use_amp")
    runtime = {name: kwargs.pop(name) for name, *_ in _RUNTIME}
    threads = configure_threads(runtime["num_threads"])  # before anything imports MXNet
    num_nodes = 1 if runtime["num_nodes"] is None else runtime["num_nodes"]
    check_options(cmd.options, kwargs)
    if use_amp and cmd.name != "train":
        raise TlkitError("--use_amp applies to train only")
    if cmd.name != "train" and (num_nodes != 1 or runtime["node_rank"] is not None or runtime["master"]):
        raise TlkitError("--num_nodes/--node_rank/--master apply to train only")
    spec_path = common["experiment_spec"]
    if cmd.needs_spec and spec_path is None:
        raise SpecError(f"tlkit {task.name} {cmd.name}: -e/--experiment_spec is required")
    own_spec = cmd.overrides_option is not None and kwargs.get(cmd.overrides_option) is not None
    spec = load_spec(spec_path, resolve(task.config_model), [] if own_spec else overrides)
    model, output = common["model"], common["output"]
    if model is not None and output is not None and Path(output).resolve() == Path(model).resolve():
        raise TlkitError(f"-o {output}: is the -m model itself; writing there would destroy it, choose another -o")
    results_dir = common["results_dir"]
    if cmd.needs_results_dir and results_dir is None:
        raise TlkitError(f"tlkit {task.name} {cmd.name}: -r/--results_dir is required")
    ctx = CommandContext(
        task=task.name,
        command=cmd.name,
        spec=spec,
        spec_path=spec_path,
        results_dir=results_dir,
        model=common["model"],
        output=common["output"],
        key=common["key"],
        gpus=common["gpus"],
        gpu_index=list(common["gpu_index"] or []),
        use_amp=use_amp,
        overrides=overrides,
        options=kwargs,
        option_specs=cmd.options,
    )
    if results_dir is not None:
        make_dir(results_dir, "-r/--results_dir")
    from tlkit.training.signals import Terminated, sigterm_interrupts

    if cmd.name == "train":
        ctx.console.print(threads.describe())
    node_rank = 0 if runtime["node_rank"] is None else runtime["node_rank"]

    try:
        with contextlib.ExitStack() as guard:
            if cmd.stage == Stage.TRAIN and results_dir is not None and node_rank == 0:  # node 0 alone writes there
                # one training per results dir; taken before anything is read or written, so a refused run
                # changes nothing (the engine takes it again, re-entrantly, for callers that skip the CLI)
                from tlkit.training.lock import results_dir_lock

                guard.enter_context(sigterm_interrupts())
                guard.enter_context(results_dir_lock(results_dir, warn=ctx.console.print))
                if kwargs.get("restart"):
                    from tlkit.training.checkpoints import archive_run

                    moved = archive_run(results_dir)
                    if moved is not None:
                        ctx.console.print(f"--restart: the previous run's files moved to {moved}", soft_wrap=True)
            if num_nodes > 1:
                from tlkit.distributed import launch

                w = launch(num_nodes, node_rank, runtime["master"])
                ctx.console.print(f"node {w.rank} of {w.size} (kvstore worker {w.kv_rank}), scheduler {w.master}")
            _run_with_hooks(task, cmd, ctx)
    except KeyboardInterrupt as err:  # click would print "Aborted!" and exit 1; say which, with the usual codes
        terminated = isinstance(err, Terminated)
        print("terminated (SIGTERM)" if terminated else "interrupted", file=sys.stderr)
        if "tlkit.distributed" in sys.modules:  # do not wait for the other nodes at ps-lite's closing barrier
            sys.modules["tlkit.distributed"].abort_if_distributed(143 if terminated else 130)
        raise SystemExit(143 if terminated else 130) from None


def _run_with_hooks(task: TaskSpec, cmd: CommandSpec, ctx: Any) -> None:
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    pm = get_registry().pm
    pm.hook.tlkit_on_stage_start(stage=cmd.stage, task=task.name, context=ctx)
    try:
        outputs = resolve(cmd.run)(ctx)
    except BaseException as err:
        pm.hook.tlkit_on_stage_end(
            stage=cmd.stage,
            task=task.name,
            context=ctx,
            result=StageResult(False, error=str(err), results_dir=ctx.results_dir),
        )
        raise
    if hasattr(outputs, "to_dict"):  # a typed result (evaluate's EvaluationResult): hooks get its dict
        outputs = outputs.to_dict()
    pm.hook.tlkit_on_stage_end(
        stage=cmd.stage,
        task=task.name,
        context=ctx,
        result=StageResult(True, outputs=outputs if isinstance(outputs, dict) else {}, results_dir=ctx.results_dir),
    )


def check_options(specs: tuple[OptionSpec, ...], values: dict[str, Any]) -> None:
    """Refuse a value outside an option's choices or bounds (naming the flag); split multiple-value options
    given as "a,b" (in place)."""
    for opt in specs:
        value = values.get(opt.name)
        if opt.multiple:
            # accept "-el a,b" as well as "-el a -el b" (and TLT's "-el a b", rewritten in main())
            given = (value,) if isinstance(value, (str, Path)) else (value or ())
            values[opt.name] = tuple(x for v in given for x in str(v).split(",") if x)
        elif opt.choices and value is not None and value not in opt.choices:
            raise TlkitError(f"{opt.flags[-1]}: {value!r} is not one of {', '.join(opt.choices)}")
        else:
            _check_bounds(opt, value)


def _check_bounds(opt: OptionSpec, value: Any) -> None:
    """A number outside the option's [min, max] (and not one of its special values) is refused, naming the flag."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value in opt.special:
        return
    if (opt.min is not None and value < opt.min) or (opt.max is not None and value > opt.max):
        lo = f">= {opt.min:g}" if opt.min is not None else ""
        hi = f"<= {opt.max:g}" if opt.max is not None else ""
        expected = " and ".join(x for x in (lo, hi) if x)
        also = f" (or {', '.join(str(v) for v in opt.special)})" if opt.special else ""
        raise TlkitError(f"{opt.flags[-1]} {value:g}: expected a number {expected}{also}")


def task_app(task: TaskSpec) -> typer.Typer:
    sub = typer.Typer(help=task.summary, no_args_is_help=True, add_completion=False)
    for cmd in task.commands:
        sub.command(name=cmd.name, help=cmd.help, context_settings={"allow_interspersed_args": True})(
            _make_command(task, cmd)
        )
    return sub


def _version_callback(value: bool) -> None:
    if value:
        print(f"tlkit {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    from tlkit.cli import deploy_cmd, model_cmd, plugins_cmd, spec_cmd
    from tlkit.registry import get_registry

    app = typer.Typer(
        name="tlkit",
        help="tlkit: transfer learning for computer vision — train, evaluate, prune, export, deploy.",
        no_args_is_help=True,
        add_completion=False,
        # click's plain help (every sub-command and plugin command inherits it): at 80 columns rich's option
        # tables cut long flag names ("--experiment_spec,…") and squeeze the help into a narrow column
        rich_markup_mode=None,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ) -> None:
        """tlkit: transfer learning for computer vision."""

    app.command("plugins", help="List installed plugins and what they register.")(plugins_cmd.plugins)
    app.add_typer(spec_cmd.spec_app, name="spec", help="Default specs and spec validation.")
    app.add_typer(
        deploy_cmd.deploy_app, name="deploy", help="Deployment configs: a DeepStream detector -> classifier cascade."
    )
    app.add_typer(
        model_cmd.model_app, name="model", help="Pretrained models (list, info, pull, push, verify) and model cards."
    )

    registry = get_registry()
    for name, task in sorted(registry.tasks().items()):
        if name in BUILTIN_COMMANDS:
            raise PluginError(f"task {name!r} from {task.distribution} clashes with the built-in command {name!r}")
        app.add_typer(task_app(task), name=name, help=task.summary)
    registry.pm.hook.tlkit_register_commands(app=app)
    _list_whole_summaries(app)
    return app


class _SummaryGroup(TyperGroup):
    """A command group whose command list shows each command's whole first sentence, wrapped to the terminal
    (click cuts it to what fits on one line and adds '...')."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=500)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _list_whole_summaries(app: typer.Typer) -> None:
    """Every group below `app` (plugins' too, unless they chose a group class) lists whole summaries."""
    from typer.models import DefaultPlaceholder

    def unset(value: Any) -> bool:
        return value is None or isinstance(value, DefaultPlaceholder)

    if unset(app.info.cls):
        app.info.cls = _SummaryGroup
    for info in app.registered_groups:
        sub = info.typer_instance
        if unset(info.cls) and (sub is None or unset(sub.info.cls)):
            info.cls = _SummaryGroup
        if sub is not None:
            _list_whole_summaries(sub)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
