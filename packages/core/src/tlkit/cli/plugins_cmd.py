"""`tlkit plugins [--json]`: every plugin, its distribution and version, status, what it registers, errors.

The text form is a list, not a table: one line per plugin, then what it registers and any error, wrapped to
the terminal (80 columns in a pipe), so no name is ever cut whatever the width.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap

import typer

from tlkit.types import PluginInfo

INDENT = "    "


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    from tlkit.cli.app import print_json
    from tlkit.registry import get_registry

    infos = get_registry().plugin_infos()
    if as_json:
        print_json([dataclasses.asdict(i) for i in infos])
        return
    width = shutil.get_terminal_size((80, 24)).columns
    print("\n".join(plugin_lines(infos, width)))


def plugin_lines(infos: list[PluginInfo], width: int = 80) -> list[str]:
    """`name  distribution version  status`, then each registered kind and the error (if any), indented and
    wrapped at `width` columns; long words (a path, a module name) are never broken."""
    width = max(width, 40)
    lines: list[str] = []
    for info in infos:
        status = {"ok": "ok", "failed": "FAILED"}.get(info.status, info.status)
        lines.append(f"{info.name}  {info.distribution} {info.version}  {status}")
        entries = [f"{kind}: {', '.join(names)}" for kind, names in info.registers.items()]
        if info.error:
            entries.append(f"error: {info.error}")
        for entry in entries:
            lines += textwrap.wrap(
                entry,
                width,
                initial_indent=INDENT,
                subsequent_indent=INDENT * 2,
                break_long_words=False,
                break_on_hyphens=False,
            )
    return lines
