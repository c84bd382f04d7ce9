"""Create a venv and install the given packages editable, with the repo's constraints.

    python scripts/mkvenv.py VENV_DIR core task-classification ...

Used by `make dev` (all packages) and by scripts/test_packages.py (core + one package: proves each
package installs and works alone).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def make_venv(venv: Path, packages: list[str], extras: str = "test") -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt")]
    args = []
    for pkg in packages:
        args += ["-e", f"{ROOT / 'packages' / pkg}[{extras}]" if extras else str(ROOT / "packages" / pkg)]
    run(pip + args)
    return py


if __name__ == "__main__":
    make_venv(Path(sys.argv[1]), sys.argv[2:])
