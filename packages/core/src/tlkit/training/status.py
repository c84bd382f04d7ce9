"""status.json: machine-readable progress in TLT/TAO's format (JSON lines appended to
`<results_dir>/status.json`), so tools written for TAO's status files can read tlkit's.

Each line: {"date": "m/d/y", "time": "h:m:s", "status": STARTED|RUNNING|SUCCESS|FAILURE|SKIPPED,
"verbosity": "INFO", "message": ..., plus optional "kpi", "graphical", "categorical" and free fields
(training adds epoch, max_epoch, time_per_epoch, eta)}.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from tlkit.io import make_dir, output_error

STATUSES = ("STARTED", "RUNNING", "SUCCESS", "FAILURE", "SKIPPED")
VERBOSITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _jsonable(value: Any) -> Any:
    """numpy/MXNet scalars -> float; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if hasattr(value, "item") and not isinstance(value, float):  # numpy scalar / 1-element array
        value = value.item()
        if isinstance(value, (bool, int)):
            return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


class StatusLogger:
    """Appends TLT-style status lines to `<results_dir>/status.json` (or to `filename`)."""

    def __init__(self, results_dir: str | os.PathLike, filename: str = "status.json"):
        self.path = Path(results_dir) / filename
        make_dir(self.path.parent)

    def write(self, status: str, message: str = "", *, verbosity: str = "INFO", **fields: Any) -> dict:
        """Append one line; returns the dict written. `fields` may hold kpi={}, graphical={},
        categorical={} and any free data (epoch, max_epoch, ...)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        if verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity must be one of {', '.join(VERBOSITIES)}, got {verbosity!r}")
        now = datetime.now()
        line = {
            "date": f"{now.month}/{now.day}/{now.year}",
            "time": f"{now.hour}:{now.minute}:{now.second}",
            "status": status,
            "verbosity": verbosity,
            "message": message,
            **_jsonable(fields),
        }
        # One write() call of a whole line in append mode: concurrent readers see complete lines.
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
                fh.flush()
        except OSError as err:
            raise output_error(err, self.path) from None
        return line

    def read(self) -> list[dict]:
        """All lines written so far (a torn last line from a killed process is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return out
