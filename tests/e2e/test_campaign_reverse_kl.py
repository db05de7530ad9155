"""A campaign trained by reverse KL (``train.objective: reverse_kl``, model ``trace``): it runs to
the end with the exact correction on the trained flow, a run SIGKILLed during reverse-KL
training resumes to a bitwise identical results file, and bad combinations exit 2 naming the
key, with nothing written."""
from __future__ import annotations

import signal

import numpy as np
import pytest

from campaign_util import digest, rgdist

pytestmark = pytest.mark.e2e

CAMPAIGN = """\
schema_version: 1
name: tinyrkl
seed: 11
lattice: {N: [6], d: 2}
grid: {m2: [-0.3], lam: [0.5]}
scheme: {name: vp, T: 1.0}
model: {name: trace, channels: 2, global_channels: 1, gaussian_exact: false}
train: {objective: OBJECTIVE, steps: 10, batch_size: 8, warmup: 2, kl_steps: 4, kl_grid: snr}
sample: {n_samples: 16, batch_size: 8, n_steps: 6, grid: snr}
measure: {n_bins: 4}
hmc: {n_chains: 4, chains_per_block: 2, therm: 4, n_traj: 8, thin: 2}
correct: {method: reweight, likelihood: trace, integrator: split, n_proposals: 32, batch_size: 16, n_steps: 4}
checkpoint: {every_steps: 3, every_seconds: null, keep: 2}
resources: {threads: 1}
output: {dir: run}
"""


def _write(tmp, objective="reverse_kl", **replace):
    text = CAMPAIGN.replace("OBJECTIVE", objective)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp / "rkl.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rkl")
    camp = _write(tmp)
    out = rgdist(["run", str(camp), "--run-dir", "ref"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return camp, tmp / "ref"


def test_reverse_kl_campaign_reports_ess(reference):
    from rgdist.io.results import read_results

    _, run_dir = reference
    (point,) = read_results(run_dir / "results.h5")["points"].values()
    a = point["arrays"]
    assert 0.0 < float(a["correct/ess_fraction"]) <= 1.0
    loss = np.asarray(a["results/train/loss"]) if "results/train/loss" in a else None
    assert loss is None or (len(loss) == 10 and np.isfinite(loss).all())


def test_kill_during_reverse_kl_training_resumes_bitwise(reference, tmp_path):
    camp, ref_dir = reference
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path,
                    RGDIST_FAULT="train_step:5")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    resumed = rgdist(["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "run" / "logs" / "rank-0000.log").read_text()
    assert "at stage train" in log
    assert digest(tmp_path / "run") == digest(ref_dir)


@pytest.mark.parametrize("objective,replace,key", [
    ("reverse_kl", {"name: trace, channels: 2, global_channels: 1,": "name: conv, channels: 2,"},
     "train.objective"),
    ("path", {"name: trace, channels: 2, global_channels: 1,": "name: conv, blocks: 1,"},
     "train.objective"),
    ("reverse_kl", {"kl_steps: 4": "kl_steps: 0"}, "train.kl_steps"),
    ("reverse_kl", {"kl_steps: 4": "kl_steps: 20000"}, "train.kl_steps"),
    ("path", {"kl_grid: snr": "kl_grid: cosine"}, "train.kl_grid"),
    ("reverse_kl", {"warmup: 2": "warmup: 2, path_weight: -1"}, "train.path_weight"),
    ("reverse_kl", {"likelihood: trace": "likelihood: hutchinson"}, "correct.integrator"),
    ("newton", {}, "train.objective"),
])
def test_bad_objective_settings_exit_2(tmp_path, objective, replace, key):
    camp = _write(tmp_path, objective, **replace)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = rgdist(["run", str(camp)], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
