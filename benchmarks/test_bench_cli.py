"""CLI start-up time: `tlkit --help` must stay fast (no MXNet import on the help path)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [["--help"], ["plugins", "--json"], ["--version"]], ids=lambda a: " ".join(a))
def test_cli_startup(benchmark, args):
    def run():
        subprocess.run([sys.executable, "-m", "tlkit", *args], check=True, capture_output=True)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
