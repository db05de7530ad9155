"""`rgdist bench NAME`: run one of the repository's benchmark scripts (benchmarks/NAME.py)
with this interpreter and pass its JSON through.

The benchmarks are not part of the package: they live in the repository checkout, next to
``rgdist/``.  From an installed wheel the verb says so (exit code 2) and runs nothing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rgdist.errors import ConfigError


def checkout_root() -> Path | None:
    """The repository checkout this rgdist is imported from, or None (a wheel install)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "benchmarks").is_dir() and (root / "rgdist").is_dir():
        return root
    return None


def bench_script(which: str) -> Path:
    root = checkout_root()
    if root is None:
        raise ConfigError("bench", f"the benchmarks live in the rgdist repository checkout (benchmarks/), "
                          f"not in this installation ({Path(__file__).resolve().parent}); clone the "
                          "repository, `pip install -e` it and run `rgdist bench` there")
    path = root / "benchmarks" / f"{which}.py"
    if not path.is_file():
        raise ConfigError("bench", f"{path} not found in the checkout {root}")
    return path


def bench_cli(which: str, quick: bool) -> int:
    cmd = [sys.executable, str(bench_script(which))] + (["--quick"] if quick else [])
    return subprocess.call(cmd)
