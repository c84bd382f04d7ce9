"""`tlkit` entry point: builds the command tree from plugins, runs it, and turns TlkitErrors into one clear
line on stderr and a non-zero exit (TLKIT_DEBUG=1 shows the traceback). It is also the last error boundary:
an OSError no command caught becomes `error: <path>: <reason>`, anything else one `internal error` line."""

from __future__ import annotations

import os
import sys

from tlkit.errors import TlkitError


def _multi_value_flags() -> set[str]:
    from tlkit.registry import get_registry

    flags = {"--gpu_index"}
    for task in get_registry().tasks().values():
        for cmd in task.commands:
            for opt in cmd.options:
                if opt.multiple:
                    flags.update(opt.flags)
    return flags


def expand_multi_values(argv: list[str], flags: set[str]) -> list[str]:
    """TLT writes `--gpu_index 0 1` and `-el a b`; click wants the flag repeated. Values are the following
    tokens that are neither flags nor key=value overrides."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        out.append(tok)
        i += 1
        if tok in flags:
            first = True
            while i < len(argv) and not argv[i].startswith("-") and "=" not in argv[i]:
                if not first:
                    out.append(tok)
                out.append(argv[i])
                first = False
                i += 1
    return out


def _check_task_name(app, argv: list[str]) -> None:
    """`tlkit detection ...` without tlkit-detection installed: say which distribution provides it; an
    unknown name gets "did you mean" and the installed tasks."""
    from tlkit.registry import get_registry

    if not argv or argv[0].startswith("-"):
        return
    known = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    if argv[0] not in known:
        get_registry().task(argv[0])  # raises UnknownNameError naming the provider / installed tasks


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from tlkit.cli.app import build_app

        app = build_app()
        _check_task_name(app, argv)
        argv = expand_multi_values(argv, _multi_value_flags())
        app(args=argv, prog_name="tlkit", standalone_mode=True)
    except TlkitError as err:
        if os.environ.get("TLKIT_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        _abort_if_distributed(err.exit_code)
        sys.exit(err.exit_code)
    except OSError as err:  # the I/O error boundary: whatever no command turned into a TlkitError
        if os.environ.get("TLKIT_DEBUG"):
            raise
        from tlkit.io import describe_os_error

        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        _abort_if_distributed(1)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        _abort_if_distributed(130)
        sys.exit(130)
    except Exception as err:  # a bug, not bad input: still one line (TLKIT_DEBUG=1 shows where)
        if os.environ.get("TLKIT_DEBUG"):
            raise
        from tlkit.errors import error_summary

        print(
            f"error: internal error {type(err).__name__}: {error_summary(err)} "
            f"(rerun with TLKIT_DEBUG=1 for the traceback and report it)",
            file=sys.stderr,
        )
        _abort_if_distributed(70)
        sys.exit(70)  # EX_SOFTWARE


def _abort_if_distributed(code: int) -> None:
    """In a multi-node job, exit at once: a normal exit would wait at ps-lite's closing barrier for nodes that
    are waiting for this one."""
    if "tlkit.distributed" in sys.modules:  # only a train with --num_nodes imports it
        sys.modules["tlkit.distributed"].abort_if_distributed(code)


if __name__ == "__main__":
    main()
