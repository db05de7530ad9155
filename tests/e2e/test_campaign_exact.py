"""The exact correction stage of a campaign (``correct: {method: both}``): results.h5 holds
points/<id>/correct/... (MH acceptance, ESS/n of the importance weights, corrected
observables), and a run killed inside the stage resumes to a bitwise identical file."""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest

from campaign_util import digest, rgdist

pytestmark = pytest.mark.e2e

CAMPAIGN = """\
schema_version: 1
name: tinyexact
seed: 5
lattice: {N: [8], d: 2}
grid: {m2: [-0.4], lam: [0.5]}
scheme: {name: carosso, T: 10.0, mu2: 0.3}
model: {name: conv, channels: 4, blocks: 1, gaussian_exact: true}
train: {steps: 12, batch_size: 16, warmup: 2}
sample: {n_samples: 32, batch_size: 8, n_steps: 8}
measure: {n_bins: 8}
hmc: {n_chains: 8, chains_per_block: 2, therm: 6, n_traj: 16, thin: 2}
correct: {method: both, n_proposals: 64, batch_size: 32, n_steps: 6, mh_chains: 4}
checkpoint: {every_steps: 3, every_seconds: null, keep: 2}
resources: {threads: 1}
output: {dir: run}
"""
N_PROPOSALS, MH_CHAINS, N_STEPS = 64, 4, 6


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exact")
    camp = tmp / "exact.yaml"
    camp.write_text(CAMPAIGN)
    out = rgdist(["run", str(camp), "--run-dir", "ref"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return camp, tmp / "ref"


def _point_arrays(run_dir):
    from rgdist.io.results import read_results

    (point,) = read_results(run_dir / "results.h5")["points"].values()
    return point["arrays"]


def test_results_hold_the_exact_group(reference):
    _, run_dir = reference
    a = _point_arrays(run_dir)
    acc, ess = float(a["correct/acceptance"]), float(a["correct/ess_fraction"])
    assert 0.0 <= acc <= 1.0
    assert 0.0 < ess <= 1.0
    assert int(a["correct/n_proposals"]) == N_PROPOSALS
    assert int(a["correct/nfe"]) == 2 * N_STEPS  # Heun: two score evaluations per step
    steps = N_PROPOSALS // MH_CHAINS - 1
    assert int(a["correct/mh_steps"]) + int(a["correct/mh_burn_in"]) == steps
    # acceptance is a fraction of mh_steps * mh_chains decisions
    k = acc * int(a["correct/mh_steps"]) * MH_CHAINS
    assert abs(k - round(k)) < 1e-9
    for name in ("m", "abs_m", "m2", "m4"):
        tau, dtau = a[f"correct/mh_tau_int/{name}"]
        assert tau > 0 and dtau >= 0
        n = int(a["correct/mh_steps"]) * MH_CHAINS
        assert math.isclose(float(a[f"correct/mh_ess/{name}"]), n / (2 * tau), rel_tol=1e-12)
    for src in ("reweight", "mh"):
        for name in ("abs_m", "m2", "chi", "binder"):
            value, err = a[f"correct/{src}/{name}"]
            assert np.isfinite(value) and np.isfinite(err) and err >= 0, (src, name)
        # chi = V <M^2> for the zero-field susceptibility of both ensembles
        chi, m2 = a[f"correct/{src}/chi"][0], a[f"correct/{src}/m2"][0]
        assert math.isclose(chi, 64 * m2, rel_tol=1e-10), (src, chi, m2)
        assert 0 <= a[f"correct/{src}/abs_m"][0] <= math.sqrt(m2) + 1e-12  # Jensen


@pytest.mark.parametrize("count", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_kill_in_exact_stage_and_resume_is_bitwise_identical(reference, tmp_path, count):
    camp, ref_dir = reference
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT=f"correct_chunk:{count}")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (tmp_path / "run" / "results.h5").exists()
    resumed = rgdist(["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "run" / "logs" / "rank-0000.log").read_text()
    assert "at stage correct" in log
    assert digest(tmp_path / "run") == digest(ref_dir)


DEFENSIVE = CAMPAIGN.replace("name: tinyexact", "name: tinydefensive").replace(
    "mh_chains: 4}", "mh_chains: 4, integrator: implicit, defensive: 0.5}")


@pytest.mark.slow  # ~25 s (suite time)
def test_defensive_mixture_with_implicit_flow_and_resume(tmp_path):
    """correct.defensive: half the proposals come from the measured Gaussian; the results record
    the fraction and the count drawn from it, and a kill in the stage resumes bitwise."""
    camp = tmp_path / "defensive.yaml"
    camp.write_text(DEFENSIVE)
    ref = rgdist(["run", str(camp), "--run-dir", "ref"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    a = _point_arrays(tmp_path / "ref")
    assert float(a["correct/defensive"]) == 0.5
    k = int(a["correct/n_defensive"])
    assert abs(k - N_PROPOSALS / 2) < 4 * math.sqrt(N_PROPOSALS / 4)  # binomial, 4 sigma
    assert 0 < float(a["correct/ess_fraction"]) <= 1 and 0 < float(a["correct/acceptance"]) < 1
    assert int(a["correct/n_nonpositive_det"]) == 0
    assert np.isfinite(float(a["correct/pareto_k"]))
    for src in ("reweight", "mh"):
        assert np.isfinite(a[f"correct/{src}/chi"]).all()
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="correct_chunk:1")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    resumed = rgdist(["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert digest(tmp_path / "run") == digest(tmp_path / "ref")


def test_closed_form_jacobian_model_runs_beyond_the_generic_volume(tmp_path):
    """model: effective with residual: false has a closed-form Jacobian, so the exact stage
    takes discrete densities at V = 400 (> 256) without any vector-Jacobian product."""
    text = CAMPAIGN.replace("name: tinyexact", "name: tinystructured").replace(
        "mh_chains: 4}", "mh_chains: 4, integrator: exponential}").replace(
        "lattice: {N: [8], d: 2}", "lattice: {N: [20], d: 2}").replace(
        "model: {name: conv, channels: 4, blocks: 1, gaussian_exact: true}",
        "model: {name: effective, operators: [phi2, grad2, phi4], residual: false, gaussian_exact: true}")
    camp = tmp_path / "structured.yaml"
    camp.write_text(text)
    out = rgdist(["run", str(camp), "--run-dir", "ref"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    a = _point_arrays(tmp_path / "ref")
    assert int(a["correct/vjp"]) == 0 and int(a["correct/n_nonpositive_det"]) == 0
    assert 0 < float(a["correct/ess_fraction"]) <= 1 and np.isfinite(a["correct/reweight/chi"]).all()
