"""The test command: each package's own tests in a venv holding only tlkit-core and that package
(proving it installs and works alone), then the cross-package tests in one full environment, then the
quality gate (ruff lint, ruff format --check, mypy; configured in the root pyproject.toml).

    python scripts/test_packages.py            # everything (what CI runs)
    python scripts/test_packages.py core task-classification   # only these packages' isolated runs

Exit code: non-zero if any run fails. pytest's "no tests collected" (5) counts as success.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mkvenv import ROOT, make_venv  # noqa: E402

PACKAGES = ["core", "task-classification", "task-detection", "task-pose", "backend-tensorrt"]
COUNTS = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}


def pytest(py: Path, paths: list[str], label: str) -> bool:
    """Run pytest, streaming its output, and add its closing counts to COUNTS."""
    t = time.time()
    cmd = [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", *paths]
    print(f"\n=== {label}: {' '.join(paths)}", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.strip():
            last = line
    rc = proc.wait()
    for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", last):
        COUNTS[kind] += int(n)
    ok = rc in (0, 5)
    print(f"=== {label}: {'ok' if ok else f'FAILED (exit {rc})'} in {time.time() - t:.0f}s", flush=True)
    return ok


def lint(py: Path) -> bool:
    """The quality gate over every package: ruff's lint rules, ruff's formatting, mypy."""
    t = time.time()
    print("\n=== lint: ruff check, ruff format --check, mypy", flush=True)
    ok = True
    for cmd in (["-m", "ruff", "check", "."], ["-m", "ruff", "format", "--check", "."], ["-m", "mypy"]):
        rc = subprocess.run([str(py), *cmd], cwd=ROOT).returncode
        if rc:
            print(f"--- {' '.join(cmd[1:])}: exit {rc}", flush=True)
        ok = ok and rc == 0
    print(f"=== lint: {'ok' if ok else 'FAILED'} in {time.time() - t:.0f}s", flush=True)
    return ok


def main(argv: list[str]) -> int:
    selected = argv or PACKAGES
    results = {}
    for pkg in selected:
        deps = ["core"] if pkg == "core" else ["core", pkg]
        py = make_venv(ROOT / ".venvs" / pkg, deps)
        results[pkg] = pytest(py, [f"packages/{pkg}/tests"], f"isolated {pkg}")
    if not argv:
        py = make_venv(ROOT / ".venv", PACKAGES)
        results["integration"] = pytest(py, ["tests"], "integration")
        results["lint"] = lint(py)
    print("\nsummary: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in results.items()))
    # a run that failed without a counted test failure (a crash, an install error) still counts as one
    failed = max(COUNTS["failed"] + COUNTS["error"], sum(not ok for ok in results.values()))
    print(f"total: {COUNTS['passed']} passed, {failed} failed, {COUNTS['skipped']} skipped")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
