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
@pytest.mark.parametrize("ranks", [2, pytest.param(3, marks=pytest.mark.slow)])
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


def test_kill_while_sampling_and_resume(serial_run, tmp_path):
    """SIGKILL in phase 3 (a point's sampling with the shared model): the resume skips the
    finished phases (points past the data stage are not re-run there) and gives the same file."""
    _, camp, ref = serial_run
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="sample_chunk:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = rgdist(["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
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


SCAN = """\
schema_version: 1
name: tinyscan
seed: 11
lattice: {N: [8], d: 2}
grid: {m2: [-0.8, -0.4], lam: [1.0]}
scheme: {name: vp}
model: {name: trace, channels: 2, global_channels: 1, gaussian_exact: true, scope: grid}
train: {steps: 30, batch_size: 32, lr: 3.0e-3, warmup: 5, ema_decay: 0.99}
sample: {n_samples: 32, batch_size: 16, n_steps: 8, grid: snr, couplings: COUPLINGS}
correct: {method: reweight, n_proposals: 128, batch_size: 64, n_steps: 8, likelihood: trace, integrator: split}
measure: {n_bins: 8, record_times: []}
hmc: {n_chains: 8, chains_per_block: 4, therm: 20, n_traj: 40, thin: 2, n_steps: 5, step_size: 0.2, fa_mass2: 0.1}
checkpoint: {every_steps: 10, every_seconds: null, keep: 2}
resources: {threads: 1}
output: {dir: run}
"""


def _scan(tmp, couplings="{m2: {linspace: [-0.8, -0.4, 3]}, lam: [1.0]}", name="scan.yaml"):
    path = tmp / name
    path.write_text(SCAN.replace("COUPLINGS", couplings))
    return path


@needs_mpirun
def test_scan_between_grid_points_is_stored_and_rank_independent(tmp_path):
    """sample.couplings: the shared model sampled and reweighted at m2 = -0.8, -0.6, -0.4
    (-0.6 is not a grid point); results under scan/N8x8 in results.h5, the same bits on 1
    and 2 ranks."""
    from rgdist.io.results import read_results

    camp = _scan(tmp_path)
    one = rgdist(["run", str(camp), "--run-dir", "one"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = mpirun(2, ["run", str(camp), "--run-dir", "two"], cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    scan = read_results(tmp_path / "one" / "results.h5")["scan"]["N8x8"]
    np.testing.assert_array_equal(scan["couplings"], [[-0.8, 1.0], [-0.6, 1.0], [-0.4, 1.0]])
    assert scan["reweight/chi"].shape == (3, 2) and scan["raw/chi"].shape == (3, 2)
    assert np.all(scan["ess_fraction"] > 0) and np.all(scan["ess_fraction"] <= 1)
    assert np.all(np.isfinite(scan["reweight/chi"]))
    # susceptibility falls as m2 grows (away from the critical point), also between points
    assert scan["reweight/chi"][0, 0] > scan["reweight/chi"][2, 0]


def test_scan_bad_input_exits_2_and_writes_nothing(tmp_path):
    cases = [
        ("[[-1.0, 1.0]]", "outside the trained window"),  # beyond the trained m2 range
        ("[[-0.6, 2.0]]", "outside the trained window"),
        ("{m2: [-0.6], lam: [1.0], kappa: [0.1]}", "exactly the axes m2 and lam"),
        ("[[-0.6]]", "pair [m2, lam]"),
    ]
    for i, (value, what) in enumerate(cases):
        camp = _scan(tmp_path, value, name=f"bad{i}.yaml")
        out = rgdist(["run", str(camp), "--run-dir", f"run{i}"], cwd=tmp_path)
        assert out.returncode == 2, (value, out.stderr)
        assert "sample.couplings" in out.stderr and what in out.stderr, (value, out.stderr)
        assert not (tmp_path / f"run{i}").exists()
    allowed = _scan(tmp_path, "[[-1.0, 1.0]]", name="allowed.yaml")
    allowed.write_text(allowed.read_text().replace("couplings: [[-1.0, 1.0]]",
                                                   "couplings: [[-1.0, 1.0]], allow_outside: true"))
    out = rgdist(["validate", str(allowed)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    point = _scan(tmp_path, "[[-0.6, 1.0]]", name="point.yaml")
    point.write_text(point.read_text().replace(", scope: grid", ""))
    out = rgdist(["validate", str(point)], cwd=tmp_path)
    assert out.returncode == 2 and "needs model.scope: grid" in out.stderr, out.stderr
    off = _scan(tmp_path, "[[-0.6, 1.0]]", name="off.yaml")
    off.write_text(off.read_text().replace("method: reweight", "method: off"))
    out = rgdist(["validate", str(off)], cwd=tmp_path)
    assert out.returncode == 2 and "correct.method" in out.stderr, out.stderr


def test_sigusr1_during_shared_training_checkpoints_and_resumes(tmp_path):
    """Pre-emption in phase 2: SIGUSR1 once the shared model has a checkpoint -> the job
    saves, exits with the re-queue code, and the resume equals the uninterrupted run."""
    import subprocess
    import sys
    import time

    from rgdist import exitcodes

    from campaign_util import env

    camp = _write(tmp_path, train_steps=150)
    proc = subprocess.Popen([sys.executable, "-m", "rgdist", "run", str(camp), "--run-dir", "run"],
                            cwd=tmp_path, env=env(RGDIST_NO_MPI=1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    grid = tmp_path / "run" / "grid" / "N8x8"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(grid.glob("ckpt-*.h5")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == exitcodes.REQUEUE, err[-2000:]
    assert "pre-empted during the train phase" in (tmp_path / "run" / "logs" / "rank-0000.log").read_text()
    done = rgdist(["resume", "run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    full = rgdist(["run", str(camp), "--run-dir", "full"], cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert digest(tmp_path / "run") == digest(tmp_path / "full")


def test_job_array_selection_is_refused_with_the_grid_scope(tmp_path):
    camp = _write(tmp_path)
    out = rgdist(["run", str(camp), "--run-dir", "run", "--points", "0/2"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "--points" in out.stderr and "model.scope: point" in out.stderr
    assert not (tmp_path / "run").exists()


def test_grid_following_a_line_is_a_rows_grid(tmp_path):
    """A zip grid whose m2 interval moves with lam (as a phase-diagram grid that follows the
    critical line) trains one Gaussian-exact model: the spectrum is interpolated along rows
    of constant lam. A scan coupling between the rows runs; one inside the bounding box but
    outside the region of the rows is bad input (exit 2, the message names the rows)."""
    from rgdist.io.results import read_results

    rows = ("grid: {m2: [-0.8, -0.4], lam: [1.0]}",
            "grid: {combine: zip, m2: [-0.8, -0.4, -1.0, -0.6], lam: [1.0, 1.0, 1.5, 1.5]}")
    camp = _scan(tmp_path, "[[-0.6, 1.0], [-0.7, 1.25]]")
    camp.write_text(camp.read_text().replace(*rows))
    out = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    scan = read_results(tmp_path / "run" / "results.h5")["scan"]["N8x8"]
    np.testing.assert_array_equal(scan["couplings"], [[-0.7, 1.25], [-0.6, 1.0]])  # m2 order
    assert np.all(np.isfinite(scan["reweight/chi"])) and np.all(scan["ess_fraction"] > 0)
    bad = _scan(tmp_path, "[[-0.45, 1.5]]", name="bad.yaml")
    bad.write_text(bad.read_text().replace(*rows))
    out = rgdist(["run", str(bad), "--run-dir", "bad"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "sample.couplings" in out.stderr and "lam = 1.5: m2 in [-1, -0.6]" in out.stderr
    assert not (tmp_path / "bad").exists()
