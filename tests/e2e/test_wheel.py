"""A wheel of the checkout, installed into a fresh virtual environment, works outside the
checkout: the shipped campaign files are package data (`rgdist campaigns`, `--copy`,
`rgdist run` without a file), `rgdist validate` runs on a copied campaign, and `rgdist bench`
says that the benchmarks live in the checkout.

The fresh environment reuses the main one's dependencies (torch, numpy, ...) through a .pth
line instead of downloading them; the .pth files of that folder (the editable install's finder)
are not processed, so `import rgdist` can only find the wheel's copy.  Offline: the wheel is
built with the venv's setuptools (`--no-build-isolation --no-index`), from a copy of the
source so that nothing is written into the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from campaign_util import REPO

pytestmark = pytest.mark.e2e

#: what a build needs from the checkout (setup.cfg reads README.md as the long description)
SOURCES = ("pyproject.toml", "setup.cfg", "MANIFEST.in", "README.md", "rgdist")
SHIPPED = sorted(p.name for p in (REPO / "rgdist" / "campaigns").glob("*.yaml"))


def _run(cmd, cwd, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(rgdist console script, python, clean env, tmp) of a fresh venv holding only the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RGDIST_", "PIP_"))}
    env.update({"OMP_NUM_THREADS": "1", "RGDIST_NO_MPI": "1", "RGDIST_PROGRESS": "off",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    dist = tmp / "dist"
    out = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                "--no-index", "-w", dist, src], cwd=tmp, env=env, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    wheels = sorted(dist.glob("rgdist-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp / "venv"
    out = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=env)
    assert out.returncode == 0, out.stderr
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp, env=env).stdout.strip())
    assert site.is_dir() and site.resolve().is_relative_to(venv.resolve()), site
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_main_venv_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    # pip comes from the main venv through the .pth line; it installs into this venv's prefix
    out = _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                wheels[0]], cwd=tmp, env=env, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    script = venv / "bin" / "rgdist"
    assert script.is_file()
    work = tmp / "work"  # a working directory outside the checkout
    work.mkdir()
    return script, py, env, work, wheels[0], venv


def test_wheel_contains_the_campaign_files(installed):
    *_, wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("rgdist/campaigns/") and n.endswith(".yaml")) == SHIPPED
    assert not any(n.startswith(("benchmarks/", "tests/", "campaigns/")) for n in names)


def test_import_comes_from_the_fresh_venv(installed):
    _, py, env, work, _, venv = installed
    out = _run([py, "-c", "import rgdist, rgdist.campaigns as c, rgdist.cli; print(rgdist.__file__); "
                "print(c.__file__); print(rgdist.cli.__file__)"], cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    files = [Path(line) for line in out.stdout.split()]
    assert len(files) == 3
    for f in files:
        assert f.resolve().is_relative_to(venv.resolve()), f
        assert not f.resolve().is_relative_to(REPO.resolve()), f


def test_campaigns_lists_every_shipped_file(installed):
    script, _, env, work, _, _ = installed
    out = _run([script, "campaigns"], cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 1) for line in out.stdout.splitlines() if line.strip()]
    listed = {r[0]: r[1] for r in rows if r[0].endswith(".yaml")}
    assert sorted(listed) == SHIPPED
    for name, desc in listed.items():  # the first comment line of each file
        first = next(ln for ln in (REPO / "rgdist" / "campaigns" / name).read_text().splitlines()
                     if ln.startswith("#"))
        assert desc.strip() == first.lstrip("#").strip()
    assert out.stderr == ""


def test_copy_then_validate_outside_the_checkout(installed):
    script, _, env, work, _, _ = installed
    d = work / "copy"
    d.mkdir()
    out = _run([script, "campaigns", "--copy", "free_field_check"], cwd=d, env=env)
    assert out.returncode == 0, out.stderr
    copied = d / "free_field_check.yaml"
    assert copied.read_bytes() == (REPO / "rgdist" / "campaigns" / "free_field_check.yaml").read_bytes()
    out = _run([script, "validate", "free_field_check.yaml"], cwd=d, env=env, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "free_field_check" in out.stdout
    # a second copy refuses to overwrite; an unknown name is bad input; nothing changes
    copied.write_text(copied.read_text() + "# edited\n")
    before = copied.read_bytes()
    for name in ("free_field_check", "free_field_check.yaml", "no_such_campaign"):
        out = _run([script, "campaigns", "--copy", name], cwd=d, env=env)
        assert out.returncode == 2, (name, out.returncode, out.stderr)
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --copy: "), out.stderr
    assert copied.read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["free_field_check.yaml"]


def test_run_without_a_file_uses_the_packaged_default(installed):
    """From a directory without campaigns/: the default campaign is found (its output.dir
    appears in the refusal to use a foreign non-empty directory), and nothing is written."""
    script, _, env, work, _, _ = installed
    d = work / "default"
    (d / "runs" / "default").mkdir(parents=True)
    (d / "runs" / "default" / "notes.txt").write_text("not a run directory\n")
    out = _run([script, "run"], cwd=d, env=env, timeout=180)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run_dir: runs/default exists"), out.stderr
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == ["runs", "runs/default", "runs/default/notes.txt"]


def test_bench_says_benchmarks_live_in_the_checkout(installed):
    script, _, env, work, _, _ = installed
    out = _run([script, "bench", "hmc", "--quick"], cwd=work, env=env)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bench: the benchmarks live in the rgdist "
                                                   "repository checkout"), out.stderr
    assert out.stdout == ""
