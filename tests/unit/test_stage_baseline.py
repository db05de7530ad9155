"""The flow-baseline stage (rgdist.campaign.stages.baseline) in process: resumed from any
mid-training state it equals the uninterrupted stage bit for bit, its sampling restarted from
the beginning gives the same numbers, its reweighted observables are those of the library's
reweighting of the same draws, and the driver runs it only when the section is enabled, after
every other stage."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from rgdist.campaign.point import STAGES, PointContext, PointJob
from rgdist.campaign.spec import parse_campaign
from rgdist.campaign.stages import BASELINE_OBSERVABLES, BaselineStage
from rgdist.correct import reweight
from rgdist.lattice import Lattice, Phi4Action
from rgdist.parallel.comm import Comm

from test_stages import CAMPAIGN, env_for, resumed, run_to_end, same

torch.set_num_threads(1)

BASELINE = {"steps": 5, "batch_size": 4, "warmup": 1, "n_steps": 2, "channels": 1,
            "global_channels": 1, "filter_rank": 1, "n_samples": 12, "sample_batch": 8,
            "tau_grid": [0.0, 0.5, 1.0]}
CARRY = {"results/train/steps": np.asarray(6, dtype=np.int64), "trainer/x": np.zeros(2)}


@pytest.fixture(scope="module")
def campaign():
    return parse_campaign({**CAMPAIGN, "baseline": BASELINE})


def make(c, reports=None):
    return BaselineStage(c.baseline, env_for(c, reports), carry=CARRY, n_bins=c.measure.n_bins)


@pytest.fixture(scope="module")
def whole(campaign):
    reports = []
    s = make(campaign, reports)
    s.restore(CARRY, 0)
    out = run_to_end(s)
    return out, reports


def test_results_layout_and_earlier_results_kept(campaign, whole):
    out, reports = whole
    assert "results/train/steps" in out and "trainer/x" not in out  # hand-over: results only
    b = {k[len("results/baseline/"):]: v for k, v in out.items() if k.startswith("results/baseline/")}
    np.testing.assert_array_equal(b["flow/t"], [0.0, 0.5, 1.0])
    for name in ("m_R", "Z", "lambda_R", "chi", "binder", "max_abs", "g2"):
        assert b[f"flow/{name}"].shape[:2] == (2, 3), name
    for name in BASELINE_OBSERVABLES:
        assert b[f"reweight/{name}"].shape == (2,) and np.isfinite(b[f"reweight/{name}"][0]), name
    assert 0 < float(b["ess_fraction"]) <= 1 and int(b["n_samples"]) == 12
    assert int(b["nfe_per_sample"]) == 8 and int(b["train/steps"]) == 5
    assert b["train/loss"].shape == (5,) and int(b["train/skipped"]) == 0
    fractions = [r["progress"] for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_resumes_bitwise_from_any_training_step(campaign, whole):
    out, _ = whole
    for k in (1, 3, 5):  # mid-training, and after the last step (before the draws)
        same(resumed(lambda: make(campaign), CARRY, k), out)


def test_reweighted_observables_are_the_libraries(campaign, whole):
    """Replaying the draws (same stream, same chunks) and reweighting them with
    rgdist.correct.reweight gives the stored values."""
    out, _ = whole
    s = make(campaign)
    s.restore(CARRY, 0)
    while s.step < campaign.baseline.steps:
        s.advance()
    g = s.env.streams("baseline", "sample")
    phis, lws = [], []
    with torch.no_grad():
        for b in (8, 4):
            phi, lq = s.cnf.sample(b, g)
            phis.append(phi)
            lws.append(s.cnf.log_weights(phi, lq, s.env.action))
    est = reweight(torch.cat(phis), torch.cat(lws), s.env.lattice, n_bins=campaign.measure.n_bins)
    for name in BASELINE_OBSERVABLES:
        np.testing.assert_allclose(out[f"results/baseline/reweight/{name}"], est[name], rtol=1e-12)


def _job(c):
    p = c.points()[0]
    ctx = PointContext(campaign=c, point=p, comm=Comm.serial(),
                       store=types.SimpleNamespace(save=lambda *a: None, load_latest=lambda **kw: None),
                       device=torch.device("cpu"), preempt=types.SimpleNamespace(requested=False))
    return PointJob(ctx)


def test_driver_order_of_the_optional_stages():
    assert STAGES[-3:] == ("correct", "baseline", "done")
    plain = _job(parse_campaign(CAMPAIGN))
    assert plain._next_stage("sample") == "done"
    with_bl = _job(parse_campaign({**CAMPAIGN, "baseline": BASELINE}))
    assert with_bl._next_stage("sample") == "baseline" and with_bl._next_stage("baseline") == "done"
    both = _job(parse_campaign({**CAMPAIGN, "baseline": BASELINE,
                                "correct": {"method": "reweight", "n_proposals": 12, "batch_size": 4}}))
    assert both._next_stage("sample") == "correct" and both._next_stage("correct") == "baseline"


def test_library_reweighted_argument_is_checked():
    from rgdist.correct import WeightedAccumulator
    from rgdist.flow.baseline import BaselineCNF, accumulate_baseline_flow

    lat = Lattice(4)
    cnf = BaselineCNF(lat, n_steps=2, channels=1, global_channels=1, filter_rank=1)
    with pytest.raises(ValueError, match="needs action"):
        accumulate_baseline_flow(cnf, 4, generator=torch.Generator().manual_seed(0), tau_grid=[1.0],
                                 n_bins=2, reweighted=WeightedAccumulator(lat, 2))
    with pytest.raises(ValueError, match="n_bins"):
        accumulate_baseline_flow(cnf, 4, generator=torch.Generator().manual_seed(0), tau_grid=[1.0],
                                 n_bins=2, action=Phi4Action(-0.5, 0.5), reweighted=WeightedAccumulator(lat, 3))


def test_the_baseline_changes_no_other_result():
    """The same campaign with and without the section: the same point id, and every result but
    the baseline's group bit for bit the same (its streams are its own)."""
    plain = parse_campaign(CAMPAIGN)
    with_bl = parse_campaign({**CAMPAIGN, "baseline": BASELINE})
    assert [p.point_id for p in plain.points()] == [p.point_id for p in with_bl.points()]
    ref, got = _job(plain).run(), _job(with_bl).run()
    mine = {k for k in got if k.startswith("baseline/")}
    assert mine and set(got) - mine == set(ref)
    same({k: got[k] for k in ref}, ref)


def test_aggregate_rows_and_text_of_the_baseline():
    from rgdist.campaign.aggregate import baseline_rows, baseline_text, merge_runs

    attrs = {"shape": [6, 6], "lam": 1.0, "m2": -0.7}
    hmc = {"chi": (2.0, 0.3), "binder": (0.2, 0.05), "m_R": (0.5, 0.1)}
    b = {"ess_fraction": np.asarray(0.5), "pareto_k": np.asarray(0.4), "train/steps": np.asarray(8),
         "train/skipped": np.asarray(0), "n_samples": np.asarray(64),
         "reweight/chi": np.array([2.8, 0.4]), "reweight/binder": np.array([0.2, 0.0])}
    point = {"attrs": attrs, "estimates": {"hmc": hmc}, "baseline": b}
    rows = baseline_rows({"p1": ("runA", point), "p0": ("runB", {**point, "baseline": {}})})
    assert [r["point_id"] for r in rows] == ["p1"]  # only points with baseline results
    r = rows[0]
    assert r["z_chi"] == pytest.approx(0.8 / 0.5) and r["chi_hmc"] == 2.0
    assert r["z_binder"] == pytest.approx(0.0) and np.isnan(r["z_xi2"])  # no value: no z
    assert r["steps"] == 8 and r["ess_fraction"] == 0.5 and r["shape"] == "6x6"
    text = baseline_text(rows)
    assert "ESS/n" in text and "+1.60" in text and "2.80(40)" in text and "2.00(30)" in text
    other = {**point, "baseline": {**b, "ess_fraction": np.asarray(0.6)}}
    _, notes = merge_runs([("runA", {"points": {"p1": point}}), ("runC", {"points": {"p1": other}})])
    assert any("flow-baseline results of runA and runC differ" in n for n in notes)


def test_float32_training_float64_draws():
    """``dtype: float32`` + ``sample_dtype: float64``: the stage trains the float32 model and
    draws from its exact float64 widening (the replay with ``cnf.cast("float64")`` gives the
    stored weights' ESS and reweighted values); resumed mid-training it is bitwise the same."""
    c = parse_campaign({**CAMPAIGN, "baseline": {**BASELINE, "dtype": "float32",
                                                 "grad_checkpoint": False,
                                                 "sample_dtype": "float64"}})
    s = make(c)
    s.restore(CARRY, 0)
    out = run_to_end(s)
    assert s.cnf.dtype == torch.float32
    wide = s.cnf.cast("float64")
    assert wide.dtype == torch.float64 and wide is not s.cnf and s.cnf.cast("float32") is s.cnf
    for (n32, p32), (n64, p64) in zip(s.cnf.named_parameters(), wide.named_parameters()):
        assert n32 == n64 and torch.equal(p32.double(), p64)  # widening is exact
    g = s.env.streams("baseline", "sample")
    phis, lws = [], []
    with torch.no_grad():
        for b in (8, 4):
            phi, lq = wide.sample(b, g)
            assert phi.dtype == torch.float64
            phis.append(phi)
            lws.append(wide.log_weights(phi, lq, s.env.action))
    est = reweight(torch.cat(phis), torch.cat(lws), s.env.lattice, n_bins=c.measure.n_bins)
    for name in BASELINE_OBSERVABLES:
        np.testing.assert_allclose(out[f"results/baseline/reweight/{name}"], est[name], rtol=1e-12)
    same(resumed(lambda: make(c), CARRY, 3), out)
