"""The flow baseline as a campaign stage (section ``baseline:``), through the CLI: its results
group, SIGKILL during its reverse-KL training + resume gives the identical file, `rgdist run`
prints its table and `rgdist plot` draws its flow along tau. (That it changes no other result
is checked in process, tests/unit/test_stage_baseline.py; the campaigns without the section
keep their pinned digests, test_results_digest.py.)"""
from __future__ import annotations

import signal

import h5py
import pytest

from campaign_util import digest, rgdist

pytestmark = pytest.mark.e2e

CAMPAIGN = """\
schema_version: 1
name: tinybaseline
seed: 11
lattice: {N: [6], d: 2}
grid: {m2: [-0.7], lam: [1.0]}
scheme: {name: carosso, T: 10.0, mu2: 0.3}
model: {name: conv, channels: 4, blocks: 1, gaussian_exact: true}
train: {steps: 6, batch_size: 16, warmup: 2}
sample: {n_samples: 32, batch_size: 8, n_steps: 6}
measure: {n_bins: 8, record_times: [0.5, 5.0]}
hmc: {n_chains: 8, chains_per_block: 2, therm: 6, n_traj: 16, thin: 2}
checkpoint: {every_steps: 3, every_seconds: null, keep: 2}
resources: {threads: 1}
output: {dir: run}
"""
BASELINE = ("baseline: {steps: 8, batch_size: 8, warmup: 2, n_steps: 4, channels: 2, "
            "global_channels: 1, filter_rank: 2, n_samples: 64, sample_batch: 32, "
            "tau_grid: [0.0, 0.5, 1.0]}\n")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baseline")
    camp = tmp / "tiny_baseline.yaml"
    camp.write_text(CAMPAIGN + BASELINE)
    r = rgdist(["run", str(camp), "--run-dir", "ref"], cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, camp, r.stdout


def test_results_hold_the_baseline_group_and_the_report_its_table(reference):
    tmp, _, stdout = reference
    with h5py.File(tmp / "ref" / "results.h5", "r") as f:
        (pid,) = list(f["points"])
        g = f[f"points/{pid}/baseline"]
        assert list(g["flow/t"][()]) == [0.0, 0.5, 1.0] and g["flow/chi"].shape == (2, 3)
        assert 0 < float(g["ess_fraction"][()]) <= 1 and int(g["train/steps"][()]) == 8
        assert g["reweight/binder"].shape == (2,)
        assert "estimates" in f[f"points/{pid}"] and "flow" in f[f"points/{pid}"]
    assert "flow baseline" in stdout and "ESS/n" in stdout  # the end-of-run report's table
    # every stage's time is booked under its own name (it once went to the next stage's)
    import json

    timings = json.loads((tmp / "ref" / "logs" / "timings-rank0000.json").read_text())
    (booked,) = timings["points"].values()
    assert {"hmc", "train", "sample", "baseline"} <= set(booked) and "done" not in booked, timings


def test_kill_in_baseline_training_and_resume_is_bitwise(reference, tmp_path):
    tmp, camp, _ = reference
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="baseline_step:5")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (tmp_path / "run" / "results.h5").exists()
    resumed = rgdist(["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "run" / "logs" / "rank-0000.log").read_text()
    assert "at stage baseline, step 3" in log  # from the mid-training checkpoint
    assert digest(tmp_path / "run") == digest(tmp / "ref")


def test_plot_draws_the_baseline_along_tau(reference, tmp_path, capsys):
    from rgdist.cli import main

    tmp, _, _ = reference
    assert main(["plot", str(tmp / "ref"), "-o", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    with h5py.File(tmp / "ref" / "results.h5", "r") as f:
        (pid,) = list(f["points"])
    for stem in (f"flow_{pid}_panels", f"flow_{pid}_baseline"):
        for ext in (".png", ".pdf"):
            assert (tmp_path / "plots" / (stem + ext)).stat().st_size > 1000
    assert "flow baseline" in text and f"flow_{pid}_baseline" in text
