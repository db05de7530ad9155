"""The per-configuration HMC series (campaign ``measure.series``, opt-in): what the HMC stage
hands over, and its values against the reweighting library's own per-configuration data."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from rgdist.analysis.reweight_m2 import config_data
from rgdist.campaign.point import PointContext, PointJob
from rgdist.campaign.spec import parse_campaign
from rgdist.campaign.stages import HMCStage, StageEnv, strip
from rgdist.campaign.stages.hmc import SERIES_NAMES, series_arrays
from rgdist.lattice import Lattice, Phi4Action
from rgdist.parallel.comm import Comm
from rgdist.seeding import torch_generator

CAMPAIGN = {"schema_version": 1, "seed": 5, "lattice": {"N": [6]},
            "grid": {"m2": [-0.5], "lam": [0.5]},
            "scheme": {"name": "carosso", "T": 10.0, "mu2": 0.3},
            "model": {"name": "conv", "channels": 4, "blocks": 1},
            "train": {"steps": 4, "batch_size": 8, "warmup": 1},
            "sample": {"n_samples": 16, "batch_size": 8, "n_steps": 4},
            "measure": {"n_bins": 4, "series": True},
            "hmc": {"n_chains": 4, "chains_per_block": 2, "therm": 4, "n_traj": 8, "thin": 2},
            "checkpoint": {"every_steps": 2, "every_seconds": None}}


def env_for(c):
    p = c.points()[0]
    lat = Lattice(tuple(p.shape))
    key = int(p.seed_key)
    return StageEnv(lattice=lat, action=Phi4Action(p.m2, p.lam, lat.d), comm=Comm.serial(),
                    device=torch.device("cpu"), streams=lambda *path: torch_generator(c.seed, key, *path),
                    report=lambda **kw: None, log=lambda s: None)


def run_hmc(c, series, k=None):
    s = HMCStage(c.hmc, env_for(c), n_bins=c.measure.n_bins, series=series)
    s.restore({}, 0)
    while not s.done:
        s.advance()
        if k is not None and s.step == k:  # resume mid-stage in a fresh stage
            state, step = s.state(), s.step
            s = HMCStage(c.hmc, env_for(c), n_bins=c.measure.n_bins, series=series)
            s.restore(state, step)
    return s.results()


def test_series_g2_p1_by_projection_equals_the_full_fft():
    """config_data without the full spectrum gets G2(p1_mu) as the k = 1 DFT of the field
    summed over the other axes; it must equal the full FFT's value. Both are sums of at most
    V = 24 terms of size O(1): rounding <= ~24 * 2^-52 relative, checked at 1e-12."""
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((50, 6, 4)) + 0.2
    chain = np.repeat(np.arange(5), 10)
    s = series_arrays(phi, chain)
    ref = config_data(phi, full_g2=True)
    assert tuple(s) == SERIES_NAMES
    for k in ("phi2_sum", "m", "g2_p1"):
        assert s[k].dtype == np.float64 and s[k].shape == ref[k].shape
        np.testing.assert_allclose(s[k], ref[k], rtol=1e-12, atol=1e-13, err_msg=k)
    assert s["chain"].dtype == np.int64 and np.array_equal(s["chain"], chain)


def test_hmc_stage_hands_over_the_series_only_when_asked():
    c = parse_campaign(CAMPAIGN)
    plain, with_series = run_hmc(c, False), run_hmc(c, True)
    extra = sorted(set(with_series) - set(plain))
    assert extra == sorted(f"results/series/{k}" for k in SERIES_NAMES)
    for k, v in plain.items():                              # nothing else changes
        assert np.array_equal(v, with_series[k]), k
    series = strip("results/series", with_series)
    ref = config_data(plain["data/configs"])
    n = plain["data/configs"].shape[0]
    assert n == c.hmc.n_configs == 16
    np.testing.assert_allclose(series["phi2_sum"], ref["phi2_sum"], rtol=1e-12)
    np.testing.assert_allclose(series["m"], ref["m"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(series["g2_p1"], ref["g2_p1"], rtol=1e-10, atol=1e-13)
    assert np.array_equal(series["chain"], plain["data/chain"])
    # a resume in the middle of the stage gives the same series bit for bit
    resumed = run_hmc(c, True, k=7)
    for k in extra:
        assert np.array_equal(resumed[k], with_series[k]), k


def test_point_results_carry_the_series():
    c = parse_campaign(CAMPAIGN)
    p = c.points()[0]
    ctx = PointContext(campaign=c, point=p, comm=Comm.serial(),
                       store=types.SimpleNamespace(save=lambda *a: None, load_latest=lambda **kw: None),
                       device=torch.device("cpu"), preempt=types.SimpleNamespace(requested=False),
                       report=lambda info: None)
    results = PointJob(ctx).run()
    assert {f"series/{k}" for k in SERIES_NAMES} <= set(results)
