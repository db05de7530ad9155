"""The same campaign under 1, 2, 3 and 4 MPI ranks gives bitwise identical results (points
split over ranks, or one point's HMC blocks and sampling chunks split over a
sub-communicator), and a run killed under 2 ranks resumes under 3 to the same file."""
from __future__ import annotations

import shutil

import pytest

from campaign_util import digest, mpirun, rgdist, write_tiny

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")]


@pytest.fixture(scope="module")
def serial_reference(tiny_run):
    return tiny_run.campaign, tiny_run.digest


@pytest.mark.parametrize("ranks", [2, 3])
def test_grid_split_over_ranks_is_bitwise_identical(serial_reference, tmp_path, ranks):
    camp, ref = serial_reference
    out = mpirun(ranks, ["run", str(camp), "--run-dir", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert digest(tmp_path / "run") == ref
    logs = sorted((tmp_path / "run" / "logs").glob("rank-*.log"))
    assert len(logs) == ranks


def test_one_point_shared_by_four_ranks_matches_serial(tmp_path):
    camp = write_tiny(tmp_path)
    text = camp.read_text().replace("grid: {m2: [-0.7, -0.4], lam: [0.5, 1.0]}", "grid: {m2: [-0.7], lam: [1.0]}")
    camp.write_text(text)
    serial = rgdist(["run", str(camp), "--run-dir", "serial"], cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr[-3000:]
    par = mpirun(4, ["run", str(camp), "--run-dir", "par"], cwd=tmp_path)
    assert par.returncode == 0, par.stdout[-2000:] + par.stderr[-3000:]
    assert digest(tmp_path / "par") == digest(tmp_path / "serial")


def test_killed_under_two_ranks_resumes_under_three(serial_reference, tmp_path):
    camp, ref = serial_reference
    killed = mpirun(2, ["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="ckpt_write:6")
    assert killed.returncode != 0
    assert not (tmp_path / "run" / "results.h5").exists()
    out = mpirun(3, ["resume", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert digest(tmp_path / "run") == ref
