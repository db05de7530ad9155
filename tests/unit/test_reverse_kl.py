"""Reverse-KL and path-objective training of exact-divergence models (rgdist.train.objectives).

* Free theory (lam = 0, m2 = 1), model 'trace' WITHOUT the Gaussian-exact wrapper (its linear
  part starts from the exact score of WHITE noise, not of the target): reverse KL from the
  action alone reaches a Kish ESS/n >= 0.99 of fresh draws at N = 16 (slow test; the CI
  version at N = 8 trains less and checks >= 0.98). The flow is run with the 'split' integrator, whose linear part is solved exactly per
  mode, so log q is the density of the map actually run and the ESS is not flattered by a
  discretization mismatch.
* Interacting point lam = 1, m2 = -1, N = 8 (U ~ 0.33): a model trained by the path objective
  (reverse KL + DSM on HMC data) corrected by self-normalized reweighting agrees with long HMC
  within 2 sigma for chi, U and <|M|> (sigma: jackknife of both, combined in quadrature).
* A trainer state saved mid-run continues bit for bit; bad combinations raise ValueError.
"""
import math

import numpy as np
import pytest
import torch

from rgdist.correct import FlowProposal, WeightedAccumulator, ess_fraction, log_weights, pareto_k
from rgdist.lattice import Lattice, Phi4Action
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum
from rgdist.train.objectives import kish_ess_fraction, reverse_kl_sample

from test_exact_mh import hmc_configs

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def z(a, b):
    return (a[0] - b[0]) / math.hypot(a[1], b[1])


def free_trainer(N, steps, batch, seed=0):
    lat = Lattice(N)
    scheme = build_scheme("vp", lat)
    model = build_model("trace", lat, scheme=scheme, channels=0, global_channels=0)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, warmup=0, ema_decay=0.99,
                      objective="reverse_kl", kl_steps=8, kl_grid="snr", log_every=0)
    action = Phi4Action(1.0, 0.0)
    return Trainer(model, scheme, None, cfg, gen(seed), action=action), action


def fresh_ess(trainer, action, n, seed):
    model = trainer.ema_model()
    with torch.no_grad():
        _, _, log_w = reverse_kl_sample(model, trainer.scheme, action, n, gen(seed),
                                        times=trainer.kl_times(), checkpoint=False,
                                        integrator="split")
    return kish_ess_fraction(log_w)


@pytest.mark.slow  # ~55 s; the CI suite trains by reverse KL in tests/e2e/test_campaign_reverse_kl.py
def test_free_theory_reverse_kl_n8():
    """The CI-sized version (300 steps at batch 256, ~1.5 core-min): measured ESS/n 0.983 on
    fresh draws; the acceptance target 0.99 is met at N = 16 with 600 steps (slow test below,
    measured 0.993)."""
    trainer, action = free_trainer(8, 300, 256)
    assert trainer.fit() == "done"
    ess = fresh_ess(trainer, action, 4096, seed=1)
    assert ess >= 0.98, ess


@pytest.mark.slow
def test_free_theory_reverse_kl_n16_reaches_ess_099():
    trainer, action = free_trainer(16, 600, 128)
    assert trainer.fit() == "done"
    ess = fresh_ess(trainer, action, 4096, seed=1)
    assert ess >= 0.99, ess


def test_reverse_kl_state_resumes_bit_for_bit():
    a, _ = free_trainer(6, 6, 8, seed=3)
    a.fit(until=3)
    state = a.state_dict()
    a.fit()
    b, _ = free_trainer(6, 6, 8, seed=99)
    b.load_state_dict(state)
    b.fit()
    assert a.loss_history == b.loss_history
    for (ka, va), (kb, vb) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        assert ka == kb and np.array_equal(va, vb), ka


def test_bad_combinations_raise():
    lat = Lattice(4)
    scheme = build_scheme("vp", lat)
    action = Phi4Action(1.0, 0.0)
    conv = build_model("conv", lat, scheme=scheme, channels=2, blocks=1)
    with pytest.raises(ValueError, match="exact, differentiable divergence"):
        Trainer(conv, scheme, None, TrainConfig(objective="reverse_kl"), gen(0), action=action)
    trace = build_model("trace", lat, scheme=scheme)
    with pytest.raises(ValueError, match="action"):
        Trainer(trace, scheme, None, TrainConfig(objective="reverse_kl"), gen(0))
    with pytest.raises(ValueError, match="data_source"):
        Trainer(trace, scheme, None, TrainConfig(objective="path"), gen(0), action=action)
    for kw, key in (({"kl_steps": 0}, "kl_steps"), ({"kl_steps": 10**6}, "kl_steps"),
                    ({"kl_grid": "cosine"}, "kl_grid"), ({"path_weight": -1.0}, "path_weight"),
                    ({"objective": "newton"}, "objective"), ({"kl_batch": 0}, "kl_batch")):
        with pytest.raises(ValueError, match=key):
            TrainConfig(**kw)


def interacting_point(objective, steps, seeds, method="trace"):
    """Train on lam = 1, m2 = -1, N = 8; return (long-HMC reference, reweighted estimates over
    8192 draws per proposal seed, log-weights, the proposal)."""
    lat = Lattice(8)
    action = Phi4Action(-1.0, 1.0)
    ref, data = hmc_configs(lat, action, 800)
    G = measured_spectrum(data, lat)
    scheme = build_scheme("vp", lat)
    model = build_model("trace", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=4, global_channels=2, generator=gen(2))
    cfg = TrainConfig(steps=steps, batch_size=64, lr=1e-2, warmup=10, ema_decay=0.99,
                      objective=objective, kl_steps=8, kl_grid="snr", weighting="likelihood",
                      log_every=0)
    trainer = Trainer(model, scheme, EnsembleData(data), cfg, gen(3), action=action, prior_G=G)
    trainer.fit()
    flow = FlowProposal(trainer.ema_model(), scheme, n_steps=8, grid="snr", prior_G=G,
                        method=method, integrator="split", batch_size=1024)
    n = 8192
    acc, lws = WeightedAccumulator(lat, 32), []
    for seed in seeds:
        phi, log_q = flow.sample(n, gen(seed))
        lws.append(log_weights(phi, log_q, action))
        acc.update(phi, lws[-1], torch.arange(n) % 32)
    return ref, acc.estimate(), torch.cat(lws), flow


@pytest.mark.slow
def test_interacting_n8_path_objective_is_corrected():
    """Path objective, 400 steps (a few core-minutes); proposals: 8 split steps on the snr grid,
    exact-trace density; 4 x 8192 draws (seeds 4-7), self-normalized reweighting.

    Measured (this machine): ESS/n 0.76-0.78 and Pareto k 0.22 per seed; reweighted z (chi, U,
    <|M|>) per seed of 8192 draws: seed 4 -2.06/-1.55/-2.06, 5 +0.28/-0.56/+0.07,
    6 -0.48/-0.90/-0.71, 7 -0.95/+0.77/-0.40 (HMC chi 10.31 +- 0.077, U 0.334 +- 0.0035).
    The exact-trace density agrees with the exact density of the discrete map (method
    'discrete', full step Jacobians, V = 64) to a log q difference of mean -5e-4, std 2e-4 on
    256 draws, so the continuous-time density adds no visible bias here (checked below).
    """
    ref, rw, lw, flow = interacting_point("path", 400, seeds=(4, 5, 6, 7))
    assert ref["binder"][0] > 0.25
    for key in ("chi", "binder", "abs_m"):
        assert abs(z(rw[key], ref[key])) < 2, (key, rw[key], ref[key])
    assert ess_fraction(lw) > 0.5 and pareto_k(lw) < 0.5
    exact = FlowProposal(flow.score_fn, flow.scheme, **{**flow.kw, "method": "discrete"},
                         batch_size=64)
    a, b = flow.sample(64, gen(9)), exact.sample(64, gen(9))
    assert torch.equal(a[0], b[0])
    assert float((a[1] - b[1]).abs().max()) < 0.01  # log q: trace density vs exact map density
