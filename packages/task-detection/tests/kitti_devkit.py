"""The official KITTI devkit's 2D evaluation (data/reference_tools/kitti_devkit), built with g++ and run on
label/result directories: the reference of tests/test_kitti_devkit.py and of the KITTI-scale benchmark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "data" / "reference_tools" / "kitti_devkit" / "evaluate_object.cpp"


def build(directory: Path) -> Path | None:
    """The evaluate_object executable built in `directory`, or None without a g++."""
    gxx = shutil.which("g++")
    if gxx is None:
        return None
    exe = Path(directory) / "evaluate_object"
    subprocess.run([gxx, "-O2", "-o", str(exe), str(SOURCE)], check=True, capture_output=True)
    return exe


def run(exe: Path, labels: Path, results: Path, n_frames: int, out: Path) -> dict[str, dict[str, list[float]]]:
    """{class: {"AP11": [easy, moderate, hard], "AP40": [...]}} for the classes the devkit evaluated (car,
    pedestrian, cyclist: those with a detection at x1 >= 0) from frames 000000.txt .. n_frames - 1."""
    out.mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(exe), str(labels), str(results), str(n_frames), str(out)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"evaluate_object failed ({proc.returncode}): {proc.stderr[-2000:]}")
    aps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("AP "):
            _, cls, *v = line.split()
            vals = [float(x) for x in v]
            aps[cls] = {"AP11": vals[:3], "AP40": vals[3:]}
    return aps
