"""One settings module: every RGDIST_* variable in the repository is in rgdist.settings'
table and in the README's table, and only rgdist.settings reads them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rgdist import settings

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"RGDIST_[A-Z][A-Z0-9_]*[A-Z0-9]")
SOURCES = ("rgdist", "scripts", "tests", "benchmarks", "slurm", "docs", ".ci")


def repo_files():
    for top in SOURCES:
        for p in (ROOT / top).rglob("*"):
            if (p.is_file() and p.suffix in (".py", ".sh", ".md", ".yaml", "") and ".venv" not in p.parts
                    and p.resolve() != Path(__file__).resolve()):
                yield p
    yield ROOT / "README.md"


def test_every_variable_in_the_repository_is_in_the_table():
    known = set(settings.PACKAGE) | set(settings.SCRIPTS)
    found = {}
    for p in repo_files():
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for name in NAME.findall(text):
            found.setdefault(name, p.relative_to(ROOT))
    unknown = {n: str(p) for n, p in found.items() if n not in known}
    assert not unknown, unknown
    assert "RGDIST_NUM_THREADS" in found and "RGDIST_THREADS" not in found


def test_readme_documents_every_variable_in_one_table():
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `(RGDIST_[A-Z0-9_]+)` \|", readme, re.M)}
    assert rows == set(settings.PACKAGE) | set(settings.SCRIPTS)


def test_only_the_settings_module_reads_the_environment():
    for p in (ROOT / "rgdist").rglob("*.py"):
        if p.name == "settings.py":
            continue
        text = p.read_text()
        assert not re.search(r"environ(\.get)?\(?\[?[\"']RGDIST_", text), p
        assert not re.search(r"getenv\([\"']RGDIST_", text), p


def test_values_are_checked(monkeypatch):
    monkeypatch.setenv("RGDIST_NUM_THREADS", "3")
    assert settings.num_threads() == 3
    for bad in ("0", "-2", "x"):
        monkeypatch.setenv("RGDIST_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="RGDIST_NUM_THREADS"):
            settings.num_threads()
    monkeypatch.setenv("RGDIST_DEVICE", "tpu")
    with pytest.raises(ValueError, match="RGDIST_DEVICE"):
        settings.device_policy()
    monkeypatch.setenv("RGDIST_NO_MPI", "0")
    assert not settings.no_mpi()
    monkeypatch.setenv("RGDIST_NO_MPI", "1")
    assert settings.no_mpi()
    with pytest.raises(ValueError, match="unknown setting"):
        settings.get("RGDIST_THREADS")
