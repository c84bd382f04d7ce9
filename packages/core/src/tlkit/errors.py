"""Errors a user sees. Each carries a one-line, specific message; the CLI prints it and exits non-zero
without a traceback (set TLKIT_DEBUG=1 to see one)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TlkitError(Exception):
    """Base of all user-facing errors: the message says what was wrong, where, and what was expected."""

    exit_code = 1


class SpecError(TlkitError):
    """An experiment spec (YAML) or a key=value override is invalid."""

    exit_code = 2


class DataError(TlkitError):
    """A dataset is missing, empty or unreadable."""


class ModelFileError(TlkitError):
    """A model/weights file is missing, corrupt, or of a kind we refuse to load."""


class ChecksumError(ModelFileError):
    """A downloaded or stored file does not have the size or hash its source publishes."""


class RegistryError(TlkitError):
    """A model registry (GluonCV's store, a team registry) cannot be read, written or reached."""


class OutputError(TlkitError):
    """A file or folder could not be written (permissions, disk full, a file where a folder should be, ...).
    The message names the path and the reason; whatever was there before is left as it was."""


class ResultsDirError(TlkitError):
    """A results dir cannot take this run: another run is using it, or it holds a run this one cannot resume
    (other classes, another network). The refused run changes no file in it."""


class PluginError(TlkitError):
    """A plugin is broken, incompatible, or clashes with another one."""


class UnknownNameError(TlkitError):
    """A name (task, architecture, exporter, ...) that no installed plugin registers."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        msg += f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        msg += f" Installed {kind}s: {', '.join(known) if known else '(none)'}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)
        self.kind, self.name, self.known, self.suggestions = kind, name, known, close


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' — shared by every 'unknown key/name' message."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def error_summary(err: BaseException) -> str:
    """The one informative line of an error message (MXNet's carry C++ backtraces after a 'Traceback' line)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    keys = ("Error in operator", "Check failed", "inconsistent", "MXNetError:")
    for ln in reversed(lines):
        if any(k in ln for k in keys) and not ln.startswith("[bt]"):
            return ln.removeprefix("MXNetError:").strip()
    lines = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "[bt]"))]
    return lines[-1] if lines else type(err).__name__
