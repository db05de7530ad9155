"""Exact correction of an UNDER-TRAINED learned sampler at an interacting point (lam = 1,
m2 = -1, N = 8: U ~ 0.33, far from Gaussian).

The model: a Gaussian-exact effective-action score (running phi2, grad2, phi4 couplings on top
of the exact Gaussian score of the measured spectrum) trained by DSM for only 1000 steps (a few
seconds); the sampler: 20 implicit probability-flow steps (a bijection with an explicit
inverse, so its density is exact at ANY configuration). Alone, this proposal is poor at N = 8:
ESS/n 0.2-3% and corrected estimates 2-9 sigma low even with 16384 draws (measured), because
it leaves the large-|M| part of the target practically unvisited. The correction therefore
runs it inside a defensive mixture with the Gaussian of the measured two-point function
(half the draws), which bounds every weight (log_weight_bound).

Checked: the raw draws are off from long HMC by > 3 sigma in U; self-normalized reweighting
and independence MH over the same 16384 draws agree within 2 sigma for chi, U and <|M|>; the
weights' Pareto tail index is < 0.7 and every weight obeys the closed-form bound. Errors:
jackknife over 32 bins (reweighting) and over independent chains (MH, so autocorrelation is
included).

Chain layout: 16 chains of 1023 steps. Independence-MH chains started from the proposal must
first FIND the rare high-weight states; a chain much shorter than the waiting time for them
underweights them, a bias shared by all chains that no error bar shows. Measured on these
draws (seed 4): chi, U, <|M|> z-scores -1.3/-1.3/-1.6 with 16 chains, -1.8/-3.6/-2.6 with 32
chains of 511 steps, -2.0/-2.9/-2.7 with 64 chains of 255 steps (reweighting: +0.1/-1.5/-0.2).
Calibration of reweighting at 16384 draws: seeds 34, 44, 54 gave largest |z| 1.17, 0.63, 0.81
(at 4096 draws, 3 of 6 seeds had a |z| > 2 in reweighting or in 32-chain MH).
"""
import math

import pytest
import torch

from rgdist.correct import (FlowProposal, IndependenceMH, ReplayProposal, WeightedAccumulator,
                          defensive_mixture, ess_fraction, log_weight_bound, log_weights,
                          pareto_k)
from rgdist.lattice import Lattice, Phi4Action
from rgdist.measure import ObservableAccumulator
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum

from test_exact_mh import hmc_configs

torch.set_num_threads(1)
KEYS = ("chi", "binder", "abs_m")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def z(a, b):
    return (a[0] - b[0]) / math.hypot(a[1], b[1])


def undertrained_flow(lat, data, train_steps, n_steps=20):
    G = measured_spectrum(data, lat)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    model = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        operators=("phi2", "grad2", "phi4"), generator=gen(2))
    trainer = Trainer(model, scheme, EnsembleData(data),
                      TrainConfig(steps=train_steps, batch_size=64, lr=1e-2, log_every=0), gen(3))
    trainer.fit()
    model = trainer.ema_model().double()
    for p in model.parameters():
        p.requires_grad_(False)
    flow = FlowProposal(model, scheme, n_steps=n_steps, grid="log", prior_G=G,
                        method="discrete", integrator="implicit")
    return flow, G


def corrected(lat, action, proposal, n, n_chains, seed):
    phi, log_q = proposal.sample(n, gen(seed))
    lw = log_weights(phi, log_q, action)
    bins = torch.arange(n) % 32
    raw = ObservableAccumulator(lat, 32).update(phi, bins).estimate()
    rw = WeightedAccumulator(lat, 32).update(phi, lw, bins).estimate()
    steps = n // n_chains - 1
    mh = IndependenceMH(ReplayProposal(phi, log_q), action, lat, n_chains,
                        generator=gen(seed + 1)).run(steps - steps // 5, burn_in=steps // 5,
                                                     n_bins=min(16, n_chains))
    return raw, rw, mh, lw


@pytest.mark.slow  # ~100 s on 2 cores; the CI suite keeps test_exact_mh's interacting N = 8 correction
def test_n8_undertrained_model_is_corrected():
    """Reference: fixed-length HMC (jitter 0), the one the seeds and chain layout above were
    calibrated against. With the jittered default HMC the reference moves within its errors
    (chi 10.07 +- 0.087 -> 10.31 +- 0.077, U 0.330 +- 0.003 -> 0.334 +- 0.0035; the resonance
    does not touch these zero-mode observables) and this test's reweighted U lands at
    -2.13 sigma: a marginal 2-sigma statistical check, reported rather than re-seeded."""
    lat = Lattice(8)
    action = Phi4Action(-1.0, 1.0)
    ref, data = hmc_configs(lat, action, 800, jitter=0.0)
    assert ref["binder"][0] > 0.25
    flow, G = undertrained_flow(lat, data, train_steps=1000)
    eps = 0.5
    proposal = defensive_mixture(flow, lat, G, eps)
    raw, rw, mh, lw = corrected(lat, action, proposal, 16384, 16, seed=4)
    assert abs(z(raw["binder"], ref["binder"])) > 3, (raw["binder"], ref["binder"])
    for key in KEYS:
        assert abs(z(rw[key], ref[key])) < 2, ("reweighted", key, rw[key], ref[key])
        assert abs(z(mh.estimates[key], ref[key])) < 2, ("MH", key, mh.estimates[key], ref[key])
    assert float(lw.max()) <= log_weight_bound(action, lat, G) - math.log(eps)
    assert 0.02 < mh.acceptance < 1 and 0.05 < ess_fraction(lw) < 1 and pareto_k(lw) < 0.7
    # the flow's own draws (label 0) are the under-trained part: visibly non-Gaussian but off
    own = proposal.last_labels == 0
    phi_flow = proposal.components[0].sample(1024, gen(9))[0]
    flow_raw = ObservableAccumulator(lat, 32).update(phi_flow, torch.arange(1024) % 32).estimate()
    assert abs(z(flow_raw["binder"], ref["binder"])) > 3
    assert 0.4 < float(own.float().mean()) < 0.6


@pytest.mark.slow
def test_n16_undertrained_model_is_corrected():
    """N = 16 (U ~ 0.17): the same under-trained model, alone, with the exponential integrator
    (Gaussian part exact; an explicit map, whose change-of-variables density is that of the
    sampler where no step folds: every draw's step determinants are checked to be > 0).
    16384 draws; MH = 16 chains of 1023 steps over the same draws."""
    lat = Lattice(16)
    action = Phi4Action(-1.0, 1.0)
    ref, data = hmc_configs(lat, action, 1600)
    assert ref["binder"][0] > 0.1
    flow, G = undertrained_flow(lat, data, train_steps=1000)
    proposal = FlowProposal(flow.score_fn, flow.scheme, n_steps=20, grid="log", prior_G=G,
                            method="discrete", integrator="exponential", batch_size=1024)
    raw, rw, mh, lw = corrected(lat, action, proposal, 16384, 16, seed=4)
    assert proposal.n_nonpositive_det == 0
    assert abs(z(raw["binder"], ref["binder"])) > 3, (raw["binder"], ref["binder"])
    for key in KEYS:
        assert abs(z(rw[key], ref[key])) < 2, ("reweighted", key, rw[key], ref[key])
        assert abs(z(mh.estimates[key], ref[key])) < 2, ("MH", key, mh.estimates[key], ref[key])
    assert 0.02 < mh.acceptance < 1 and 0.05 < ess_fraction(lw) < 1 and pareto_k(lw) < 0.7
