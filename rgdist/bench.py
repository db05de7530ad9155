"""`rgdist bench NAME`: run one of the repository's benchmark scripts (benchmarks/NAME.py)
with this interpreter and pass its JSON through."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rgdist.errors import ConfigError


def bench_script(which: str) -> Path:
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    path = root / f"{which}.py"
    if not path.is_file():
        raise ConfigError("bench", f"{path} not found: benchmarks ship with the source tree, "
                          "run `rgdist bench` from a checkout (pip install -e .)")
    return path


def bench_cli(which: str, quick: bool) -> int:
    cmd = [sys.executable, str(bench_script(which))] + (["--quick"] if quick else [])
    return subprocess.call(cmd)
