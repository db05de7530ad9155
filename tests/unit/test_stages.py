"""The point pipeline's stages in process: each stage resumed from a mid-stage state equals
the uninterrupted stage bit for bit, the driver reports a progress that never goes back, and
the hybrid MH's HMC keeps the configured trajectory length."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from rgdist.campaign import build
from rgdist.campaign.point import PointContext, PointJob
from rgdist.campaign.spec import parse_campaign
from rgdist.campaign.stages import CorrectStage, HMCStage, SampleStage, StageEnv, TrainStage, strip
from rgdist.lattice import Lattice, Phi4Action
from rgdist.parallel.comm import Comm
from rgdist.seeding import torch_generator
from rgdist.train.data import measured_spectrum

CAMPAIGN = {"schema_version": 1, "seed": 5, "lattice": {"N": [6]},
            "grid": {"m2": [-0.5], "lam": [0.5]},
            "scheme": {"name": "carosso", "T": 10.0, "mu2": 0.3},
            "model": {"name": "conv", "channels": 4, "blocks": 1},
            "train": {"steps": 6, "batch_size": 8, "warmup": 1},
            "sample": {"n_samples": 24, "batch_size": 8, "n_steps": 6},
            "measure": {"n_bins": 4, "record_times": [0.5, 3.0]},
            "hmc": {"n_chains": 4, "chains_per_block": 2, "therm": 4, "n_traj": 8, "thin": 2},
            "checkpoint": {"every_steps": 2, "every_seconds": None}}


@pytest.fixture(scope="module")
def campaign():
    return parse_campaign(CAMPAIGN)


def env_for(c, reports=None):
    p = c.points()[0]
    lat = Lattice(tuple(p.shape))
    key = int(p.seed_key)
    return StageEnv(lattice=lat, action=Phi4Action(p.m2, p.lam, lat.d), comm=Comm.serial(),
                    device=torch.device("cpu"),
                    streams=lambda *path: torch_generator(c.seed, key, *path),
                    report=(lambda **kw: reports.append(kw)) if reports is not None else (lambda **kw: None),
                    log=lambda s: None)


def same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert np.array_equal(x, y, equal_nan=True), k


def run_to_end(stage):
    while not stage.done:
        stage.advance()
    return stage.results()


def resumed(make, carry, k):
    """Advance a fresh stage k steps, take its state, continue in another fresh stage."""
    first = make()
    first.restore(carry, 0)
    for _ in range(k):
        first.advance()
    state = first.state()
    second = make()
    second.restore({**carry, **state}, first.step)
    return run_to_end(second)


@pytest.fixture(scope="module")
def hmc_carry(campaign):
    s = HMCStage(campaign.hmc, env_for(campaign), n_bins=campaign.measure.n_bins)
    s.restore({}, 0)
    return run_to_end(s)


def test_hmc_stage_resumes_bitwise(campaign, hmc_carry):
    make = lambda: HMCStage(campaign.hmc, env_for(campaign), n_bins=campaign.measure.n_bins)
    for k in (2, 5, 11):  # in thermalization, at the first kept field, one before the end
        same(resumed(make, {}, k), hmc_carry)
    assert hmc_carry["data/configs"].shape == (4 * 4, 6, 6)


def trainer_for(c, carry):
    env = env_for(c)
    scheme = build.scheme_for(c.scheme, env.lattice)
    data = torch.as_tensor(carry["data/configs"])
    G = measured_spectrum(data, env.lattice)
    model = build.model_for(c.model, env.lattice, scheme, G, env.streams("init"), env.device)
    return build.trainer_for(c.train, c.scheme.t_min, model, scheme, data, env.action, G,
                             env.streams("train"), env.device), scheme, G


@pytest.fixture(scope="module")
def train_carry(campaign, hmc_carry):
    s = TrainStage(trainer_for(campaign, hmc_carry)[0], env_for(campaign))
    s.restore(hmc_carry, 0)
    return {**hmc_carry, **run_to_end(s)}


def test_train_stage_resumes_bitwise(campaign, hmc_carry, train_carry):
    make = lambda: TrainStage(trainer_for(campaign, hmc_carry)[0], env_for(campaign))
    for k in (1, 4):
        got = {**hmc_carry, **resumed(make, hmc_carry, k)}
        same(got, train_carry)
    assert int(train_carry["results/train/steps"]) == campaign.train.steps


def sample_stage(c, carry, reports=None):
    trainer, scheme, G = trainer_for(c, carry)
    trainer.load_state_dict(strip("trainer", carry))
    model = trainer.ema_model()
    model.eval()
    return SampleStage(c.sample, env_for(c, reports), model=model, scheme=scheme, G=G, carry=carry,
                       n_bins=c.measure.n_bins, record_times=c.measure.record_times,
                       t_min=c.scheme.t_min, weighting=c.train.weighting,
                       diagnostics={"x": np.zeros(1)})


def test_sample_stage_resumes_bitwise(campaign, train_carry):
    reports = []
    s = sample_stage(campaign, train_carry, reports)
    s.restore(train_carry, 0)
    whole = run_to_end(s)
    assert [r["progress"] for r in reports] == [1 / 3, 2 / 3, 1.0]
    assert "results/flow/learned/t" in whole or "results/flow/learned/chi" in whole
    for k in (1, 2):
        same(resumed(lambda: sample_stage(campaign, train_carry), train_carry, k), whole)


def test_driver_progress_never_goes_back(campaign, tmp_path):
    from rgdist.campaign.progress import ProgressReporter

    p = campaign.points()[0]
    (tmp_path / "status").mkdir()
    rep = ProgressReporter(tmp_path, [p.point_id], enabled=False)
    write = rep.callback(p.point_id)
    seen = []

    def report(info):
        write(info)
        rep._last_write.clear()  # no throttling: every report is written
        seen.append(rep.fraction()[0])

    ctx = PointContext(campaign=campaign, point=p, comm=Comm.serial(),
                       store=types.SimpleNamespace(save=lambda *a: None, load_latest=lambda **kw: None),
                       device=torch.device("cpu"), preempt=types.SimpleNamespace(requested=False),
                       report=report)
    PointJob(ctx).run()
    assert len(seen) > 10 and seen[-1] == 1.0
    drops = [(a, b) for a, b in zip(seen, seen[1:]) if b < a]
    assert not drops, drops


def test_hybrid_hmc_keeps_the_configured_trajectory_length(campaign):
    h = campaign.hmc  # n_steps 10, step_size 0.1: length 1.0
    for adapted, want in ((0.1, 10), (0.05, 20), (0.13, 8), (2.0, 1)):
        got = build.hybrid_hmc_params(h, np.array([adapted, adapted]))
        assert got["n_steps"] == want and got["step_size"] == adapted
    assert abs(build.hybrid_hmc_params(h, np.array([0.12]))["n_steps"] * 0.12 - h.n_steps * h.step_size) <= 0.06


CORRECT = {"method": "both", "n_proposals": 12, "batch_size": 4, "n_steps": 4, "mh_chains": 2}


class Interrupted(Exception):
    pass


def correct_stage(c, carry, reports=None, hmc_trajectories=0):
    e = parse_campaign({**CAMPAIGN, "correct": {**CORRECT, "hmc_trajectories": hmc_trajectories}}).correct
    trainer, scheme, G = trainer_for(c, carry)
    trainer.load_state_dict(strip("trainer", carry))
    hmc_params = build.hybrid_hmc_params(c.hmc, carry["hmc/step_size"]) if hmc_trajectories else None
    return CorrectStage(e, env_for(c, reports), model=trainer.ema_model(), scheme=scheme, G=G,
                        carry=carry, grid=c.sample.grid, t_min=c.scheme.t_min,
                        n_bins=c.measure.n_bins, hmc_params=hmc_params)


@pytest.mark.parametrize("hybrid", [0, 1])
def test_correct_stage_restarted_after_an_interruption_is_bitwise(campaign, train_carry, hybrid):
    """The correction stage keeps no intermediate state: a stage killed after its first chunk
    of proposals and started again from its beginning gives the uninterrupted numbers."""
    reports = []
    whole = correct_stage(campaign, train_carry, reports, hybrid)
    whole.restore(train_carry, 0)
    out = run_to_end(whole)
    fractions = [r["progress"] for r in reports]
    assert fractions[:3] == [1 / 6, 2 / 6, 3 / 6] and fractions[-1] == 1.0  # 3 chunks, then MH
    assert fractions == sorted(fractions)
    assert int(out["results/correct/n_proposals"]) == CORRECT["n_proposals"]
    assert 0 < float(out["results/correct/ess_fraction"]) <= 1
    assert 0 <= float(out["results/correct/acceptance"]) <= 1
    assert ("results/correct/mh_hmc_acceptance" in out) == bool(hybrid)
    for name in ("abs_m", "m2", "chi", "binder", "xi2"):
        for src in ("reweight", "mh"):
            assert out[f"results/correct/{src}/{name}"].shape == (2,)
    assert {k for k in train_carry if k.startswith("results/")} <= set(out)  # earlier results kept

    def stop_after_first_chunk(**kw):
        if kw.get("progress", 0) > 0:
            raise Interrupted

    cut = correct_stage(campaign, train_carry, None, hybrid)
    cut.env.report = stop_after_first_chunk
    cut.restore(train_carry, 0)
    with pytest.raises(Interrupted):
        cut.advance()
    again = correct_stage(campaign, train_carry, None, hybrid)
    again.restore(train_carry, 0)
    same(run_to_end(again), out)
