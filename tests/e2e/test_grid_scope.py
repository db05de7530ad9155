"""``model.scope: grid``: one coupling-conditioned model trained data-parallel by all ranks.

Its results file is bitwise the same for 1, 2 and 3 ranks (3 ranks on 4 points: groups of
one rank, one rank owning two points), and after SIGKILL during the shared training followed
by a resume under a different rank count. The shared model is checkpointed once, under
grid/N8x8/, not per rank or point. Bad input exits 2 and writes nothing."""
from __future__ import annotations

import shutil
import signal

import h5py
import numpy as np
import pytest

from campaign_util import TINY, digest, mpirun, rgdist

pytestmark = pytest.mark.e2e

GRID = TINY.replace("gaussian_exact: true}}", "gaussian_exact: true, scope: grid}}")


def _write(tmp, name="grid.yaml", **kw):
    args = {"train_steps": 12, "sample_steps": 8, "every": 3, **kw}
    path = tmp / name
    path.write_text(GRID.format(**args))
    return path


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid_serial")
    camp = _write(tmp)
    out = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, camp, digest(tmp / "run")


def test_grid_run_has_one_shared_checkpoint_and_per_point_losses(serial_run):
    tmp, _, dig = serial_run
    assert [p.name for p in (tmp / "run" / "grid").iterdir()] == ["N8x8"]
    ckpts = sorted((tmp / "run" / "grid" / "N8x8").glob("ckpt-*.h5"))
    assert ckpts
    with h5py.File(ckpts[-1], "r") as f:
        names = []
        f.visit(names.append)
    assert not any(n.split("/")[-1].startswith("rank") for n in names)  # shared, not per rank
    with h5py.File(tmp / "run" / "results.h5", "r") as f:
        losses = [np.asarray(f[f"points/{pid}/train/loss"]) for pid in f["points"]]
        steps = {int(np.asarray(f[f"points/{pid}/train/steps"])) for pid in f["points"]}
    assert steps == {12} and all(len(x) == 12 for x in losses)
    # each point has its own loss contribution (different data), from one shared model
    assert len({x.tobytes() for x in losses}) == 4
    assert any(k.endswith("estimates/diffusion/chi") for k in dig)


needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")


@needs_mpirun
@pytest.mark.parametrize("ranks", [2, 3])
def test_grid_results_are_the_same_for_any_rank_count(serial_run, tmp_path, ranks):
    _, camp, ref = serial_run
    out = mpirun(ranks, ["run", str(camp), "--run-dir", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert digest(tmp_path / "run") == ref


@needs_mpirun
def test_kill_in_shared_training_and_resume_on_other_rank_count(serial_run, tmp_path):
    _, camp, ref = serial_run
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="train_step:7")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "run" / "results.h5").exists()
    assert list((tmp_path / "run" / "grid" / "N8x8").glob("ckpt-*.h5"))  # mid-training state
    resumed = mpirun(2, ["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("rank-*.log"))
    assert "resumed shared training at step 6" in logs
    assert digest(tmp_path / "run") == ref


def test_grid_scope_with_one_point_per_size_is_bad_input(tmp_path):
    camp = tmp_path / "one.yaml"
    camp.write_text(GRID.format(train_steps=12, sample_steps=8, every=3).replace(
        "m2: [-0.7, -0.4], lam: [0.5, 1.0]", "m2: [-0.7], lam: [1.0]"))
    out = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "model.scope" in out.stderr and "at least 2 points" in out.stderr
    assert not (tmp_path / "run").exists()
    zipped = tmp_path / "zip.yaml"
    zipped.write_text(GRID.format(train_steps=12, sample_steps=8, every=3).replace(
        "grid: {m2: [-0.7, -0.4], lam: [0.5, 1.0]}",
        "grid: {combine: zip, m2: [-0.7, -0.4], lam: [0.5, 1.0]}"))
    out = rgdist(["validate", str(zipped)], cwd=tmp_path)
    assert out.returncode == 2 and "product grid" in out.stderr, out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRID.format(train_steps=12, sample_steps=8, every=3).replace("scope: grid", "scope: all"))
    out = rgdist(["validate", str(bad)], cwd=tmp_path)
    assert out.returncode == 2 and "model.scope" in out.stderr and "grid" in out.stderr, out.stderr
