"""Pinned results: the stage redesign (and anything after it) keeps every result bit for bit.

``golden/results_digest.json`` holds the content digest (sha256 of every dataset and
attribute of results.h5, ``rgdist.io.results.content_digest``) of three campaigns as written
by the code BEFORE the redesign (commit f01c3d6, results layout 1): the tiny e2e campaign,
the same with the correction stage (reweighting + MH), and the default campaign at 2 ranks
(slow), keyed by their layout-1 names. Layout 2 renamed groups (rgdist.io.layout): the golden
names are mapped with ``to_current(name, 1)`` and compared with the new file's digest. The root attribute ``rgdist_layout``
differs by design, and the resolved-campaign text ``campaign`` is compared after mapping its
layout-1 spelling (section ``exact`` -> ``correct``, likelihood ``exact`` -> ``trace``).

The values depend on the CPU's FFT/BLAS rounding: the digests were pinned on the machine named
in the golden file (CI's machine kind); elsewhere the comparison is skipped with that reason.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import h5py
import pytest
import torch

from campaign_util import REPO, mpirun, rgdist, write_tiny

GOLDEN = json.loads((Path(__file__).parent / "golden" / "results_digest.json").read_text())
CORRECT = ("correct: {method: both, n_proposals: 16, batch_size: 8, mh_chains: 2, n_steps: 6, "
           "hmc_trajectories: 0}\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def pinned_here() -> str | None:
    m = GOLDEN["machine"]
    if cpu_model() != m["cpu"] or torch.__version__ != m["torch"]:
        return (f"digests pinned on {m['cpu']} with torch {m['torch']}; this is {cpu_model()} "
                f"with torch {torch.__version__} (other FFT/BLAS rounding)")
    return None


def layout1_campaign(text: str) -> dict:
    c = json.loads(text)
    if "correct" in c:
        c["exact"] = c.pop("correct")
        if c["exact"].get("likelihood") == "trace":
            c["exact"]["likelihood"] = "exact"
    return c


def check(results: Path, name: str) -> None:
    from rgdist.io.layout import to_current
    from rgdist.io.results import content_digest

    want = GOLDEN["campaigns"][name]
    want = {**want, "digest": {to_current(k, 1): v for k, v in want["digest"].items()}}
    got = content_digest(results)
    assert got.pop("/@rgdist_layout") != "", "layout attribute present"
    got.pop("/@campaign")
    with h5py.File(results, "r") as f:
        text = f.attrs["campaign"]
        assert int(f.attrs["rgdist_layout"]) == 2
    text = text.decode() if isinstance(text, bytes) else text
    assert layout1_campaign(text) == want["campaign_layout1"]
    missing = sorted(set(want["digest"]) - set(got))
    extra = sorted(set(got) - set(want["digest"]))
    differ = sorted(k for k in set(got) & set(want["digest"]) if got[k] != want["digest"][k])
    assert not (missing or extra or differ), {"missing": missing[:10], "extra": extra[:10],
                                              "differ": differ[:10], "n_differ": len(differ)}


def test_tiny_campaign_results_are_pinned(tiny_run):
    """The tiny campaign (write_tiny's defaults: 12 training, 8 sampling steps, checkpoint every 3)."""
    why = pinned_here()
    if why:
        pytest.skip(why)
    check(tiny_run.run_dir / "results.h5", "tiny")


def test_tiny_correct_campaign_results_are_pinned(tmp_path):
    why = pinned_here()
    if why:
        pytest.skip(why)
    y = write_tiny(tmp_path, train_steps=12, sample_steps=8, every=3)
    y.write_text(y.read_text() + CORRECT)
    r = rgdist(["run", str(y), "--run-dir", str(tmp_path / "run")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    check(tmp_path / "run" / "results.h5", "tiny_correct")


@pytest.mark.slow
def test_default_campaign_results_are_pinned(tmp_path):
    """The shipped default campaign at 2 MPI ranks (about 7 minutes on 2 cores)."""
    why = pinned_here()
    if why:
        pytest.skip(why)
    r = mpirun(2, ["run", str(REPO / "rgdist" / "campaigns" / "default.yaml"), "--run-dir",
                   str(tmp_path / "run")], cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    check(tmp_path / "run" / "results.h5", "default")
