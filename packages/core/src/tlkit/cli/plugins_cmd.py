"""`tlkit plugins [--json]`: every plugin, its distribution and version, status, what it registers, errors."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.table import Table


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    from tlkit.cli.app import print_json
    from tlkit.registry import get_registry

    infos = get_registry().plugin_infos()
    if as_json:
        print_json([dataclasses.asdict(i) for i in infos])
        return
    table = Table(title="tlkit plugins")
    for col in ("name", "distribution", "version", "status", "registers", "error"):
        table.add_column(col, overflow="fold")
    for i in infos:
        regs = "; ".join(f"{k}: {', '.join(v)}" for k, v in i.registers.items())
        status = {"ok": "[green]ok[/]", "failed": "[red]FAILED[/]"}.get(i.status, i.status)
        table.add_row(i.name, i.distribution, i.version, status, regs, i.error or "")
    Console(width=160).print(table)
