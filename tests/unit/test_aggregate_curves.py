"""`rgdist aggregate` with HMC series (campaign ``measure.series: true``): continuous curves by
multi-histogram reweighting in m2, and the crossings found on them.

Data: real HMC (Fourier accelerated, lam = 1) at N = 6 and 8, m2 in {-1.45, -1.35, -1.25,
-1.15, -1.05}, 16 chains x 200 kept configurations per point (thin 2), written as run
directories by the real writer (rgdist.io.results.write_results): the HMC accumulators (so the
grid-point estimates are the ones a campaign stores) and the per-configuration series of
rgdist.campaign.stages.hmc.series_arrays (what HMCStage hands over with series on).

Expectations: the reweighted curves are evaluated on the whole sampled range (neighbouring
points overlap: sd(dS) = 0.05 sd(E) ~ 0.5 at V = 64); at the grid points they agree with the
points' own estimates (within 3 sigma of the point); the 6/8 Binder crossing on the curves lies
within the error of the grid-point crossing (local quadratic fits, bootstrap) of the same data.
Measured (this file's seeds): Binder 6/8 on the curves m2 = -1.155(18), U = 0.473(14); grid
points -1.155(48), U = 0.479(35); xi2/N 6/8 on the curves -1.2745(121), grid points -1.266(22)
(the curves use every configuration of the neighbouring points at each target, the grid-point
fit four points).  About 30 s.  Bad input: ``measure.series: 3`` is exit 2 naming the key; a
line whose points do not overlap gets skipped ranges naming the refused target and the support
(no error).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

from rgdist.campaign.aggregate import aggregate, format_report  # noqa: E402
from rgdist.campaign.spec import parse_campaign  # noqa: E402
from rgdist.campaign.stages.hmc import series_arrays  # noqa: E402
from rgdist.cli import main  # noqa: E402
from rgdist.io.aggregate_file import read_aggregate  # noqa: E402
from rgdist.io.atomic import atomic_write_json  # noqa: E402
from rgdist.io.results import write_results  # noqa: E402
from rgdist.lattice import Lattice, Phi4Action  # noqa: E402
from rgdist.lattice.hmc import HMC  # noqa: E402
from rgdist.measure import ObservableAccumulator  # noqa: E402
from rgdist.parallel.comm import Comm  # noqa: E402
from rgdist.seeding import torch_generator  # noqa: E402

torch.set_num_threads(1)
M2S = [-1.45, -1.35, -1.25, -1.15, -1.05]
N_BINS = 16


def hmc_arrays(N, m2, lam, key, chains=16, n_traj=400, thin=2):
    """The results arrays of one point: acc_hmc/... and series/..."""
    lat = Lattice(N)
    hmc = HMC(Phi4Action(m2, lam), lat, chains, step_size=0.2, n_steps=10, fourier_accel=True,
              fa_mass2=0.1, target_accept=0.85, generator=torch_generator(11, "agg-curves", N, key))
    hmc.thermalize(100)
    kept = hmc.sample(n_traj, thin=thin)
    data = kept.transpose(0, 1).reshape(-1, N, N)                      # ordered (chain, time)
    chain = np.repeat(np.arange(chains), kept.shape[0])
    acc = ObservableAccumulator(lat, N_BINS).update(data, torch.as_tensor(chain % N_BINS))
    out = {f"acc_hmc/{k}": np.asarray(v) for k, v in acc.to_arrays().items()}
    out.update({f"series/{k}": v for k, v in series_arrays(data.numpy(), chain).items()})
    return out


def make_run(path, sizes, m2s, lam=1.0, series=True):
    mapping = {"schema_version": 1, "name": "curves", "seed": 5, "lattice": {"N": list(sizes)},
               "grid": {"m2": list(m2s), "lam": [lam]},
               "measure": {"n_bins": N_BINS, "series": series}}
    camp = parse_campaign(mapping)
    path.mkdir(parents=True)
    atomic_write_json(path / "campaign.json", camp.to_dict())
    owned = {}
    for p in camp.points():
        arrays = hmc_arrays(p.N[0], p.m2, p.lam, p.index)
        owned[p.point_id] = arrays if series else {k: v for k, v in arrays.items()
                                                   if not k.startswith("series/")}
    write_results(path / camp.output.results, camp, camp.points(), owned, Comm.serial())
    return camp


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curves")
    make_run(tmp / "N6", [6], M2S)
    make_run(tmp / "N8", [8], M2S)
    return tmp


@pytest.fixture(scope="module")
def aggregated(runs):
    out = runs / "agg" / "phase"
    return out, aggregate([runs / "N6", runs / "N8"], str(out), n_boot=400)


def test_curves_and_crossings(aggregated):
    out, res = aggregated
    assert len(res["curves"]) == 1
    line = res["curves"][0]
    assert line["lam"] == 1.0 and sorted(line["curves"]) == [6, 8]
    for N, c in line["curves"].items():
        assert c.reason == "" and c.skipped == [], (N, c.skipped)
        assert c.supported.all()                                     # the whole sampled range
        assert np.all(c.error["binder"] > 0) and np.all(c.error["chi"] > 0)
        # at the grid points the curve agrees with the point's own estimate
        sub = res["tables"][2].select(lam=1.0, source="hmc")
        for obs in ("binder", "chi", "xi_over_N"):
            m2, y, dy = sub.curve(N, 1.0, obs)
            t = [int(np.argmin(abs(line["grid"] - m))) for m in m2]
            pull = (c.value[obs][t] - y) / dy
            assert np.all(abs(pull) < 3), (N, obs, pull)
    rows = {(r["observable"], r["N_a"], r["N_b"]): r for r in res["curve_crossings"]}
    b = rows[("binder", 6, 8)]
    print(f"Binder 6/8: curves m2 = {b['m2']:.4f}({b['dm2']:.4f}) U = {b['value']:.4f}"
          f"({b['dvalue']:.4f}); grid points m2 = {b['grid_m2']:.4f}({b['grid_dm2']:.4f}) "
          f"U = {b['grid_value']:.4f}({b['grid_dvalue']:.4f})")
    x = rows[("xi_over_N", 6, 8)]
    print(f"xi2/N 6/8: curves m2 = {x['m2']:.4f}({x['dm2']:.4f}); grid {x['grid_m2']:.4f}"
          f"({x['grid_dm2']:.4f})")
    assert b["reason"] == "" and math.isfinite(b["dm2"]) and b["dm2"] > 0
    assert abs(b["m2"] - b["grid_m2"]) < b["grid_dm2"]                # within the grid error
    assert abs(b["value"] - b["grid_value"]) < b["grid_dvalue"]
    assert -1.45 < b["m2"] < -1.05 and 0.3 < b["value"] < 0.65


def test_outputs_json_h5_text_figures(aggregated):
    out, res = aggregated
    js = json.loads(out.with_name("phase_curves.json").read_text())
    assert {"method", "lines", "crossings"} <= set(js)
    assert "reweighting" in js["method"] and "jackknife" in js["method"]
    lines = {ln["N"]: ln for ln in js["lines"]}
    assert sorted(lines) == [6, 8]
    for ln in lines.values():
        assert {"m2", "ess", "binder", "chi", "xi_over_N", "skipped", "ensembles_m2"} <= set(ln)
        assert len(ln["m2"]) == len(ln["binder"]["value"]) == len(ln["binder"]["error"]) > 50
        assert ln["ensembles_m2"] == M2S and ln["skipped"] == []
    for c in js["crossings"]:
        assert {"observable", "N_a", "N_b", "m2", "dm2", "value", "dvalue", "grid_m2",
                "grid_dm2"} <= set(c)
    h5 = read_aggregate(out.with_name("phase.h5"))
    assert {"curves", "curve_crossings", "crossings", "points"} <= set(h5["tables"])
    assert len(h5["tables"]["curve_crossings"]["m2"]) == 2           # binder and xi2/N, 6/8
    assert out.with_name("phase_curve_crossings.csv").is_file()
    text = format_report(res)
    assert "continuous curves U, chi, xi2/N" in text and "curves m2 = " in text
    assert "grid points m2 = " in text
    names = {p.name for p in res["files"]["plots"]}
    assert {"binder_lam1_hmc.png", "xi_over_N_lam1_hmc.png", "chi_curve_lam1_hmc.png"} <= names
    assert "chi_curve_lam1_diffusion.png" not in names


def test_critical_line_from_the_curves_with_anchors(aggregated):
    """The curves' critical line: the 6/8 Binder crossing (one pair: no drift term, noted),
    U* and xi2/N* from the same pair, and the anchors at lam = 1 (leading-order continuum
    line and the lattice value -1.2725 with the pull); in the text, CSV, h5 and the phase
    diagram (which also draws the anchors)."""
    from rgdist.analysis.critical import continuum_critical_m2

    out, res = aggregated
    [row] = res["curve_critical"]
    cross = {(r["observable"], r["N_a"], r["N_b"]): r for r in res["curve_crossings"]}
    assert row["reason"] == "" and row["pair"] == "6-8" and "one pair only" in row["note"]
    assert row["m2_c"] == cross[("binder", 6, 8)]["m2"] and row["dm2"] == cross[("binder", 6, 8)]["dm2"]
    assert row["binder"] == cross[("binder", 6, 8)]["value"]
    assert row["xi_over_N"] == cross[("xi_over_N", 6, 8)]["value"]
    assert row["m2_c_lo"] == continuum_critical_m2(1.0) and row["m2_c_ref"] == -1.2725
    assert row["z_ref"] == (row["m2_c"] + 1.2725) / row["dm2"]
    text = format_report(res)
    assert "critical line from the curves" in text and "-1.2993 / -1.2725 (z = " in text
    assert out.with_name("phase_curve_critical.csv").is_file()
    h5 = read_aggregate(out.with_name("phase.h5"))
    assert h5["tables"]["curve_critical"]["m2_c"][0] == row["m2_c"]
    assert "phase_diagram.png" in {p.name for p in res["files"]["plots"]}
    crit = {r["source"]: r for r in res["critical"]}
    assert crit["hmc"]["m2_c_ref"] == -1.2725 and crit["hmc"]["m2_c_lo"] == row["m2_c_lo"]


def test_runs_without_series_aggregate_as_before(tmp_path):
    make_run(tmp_path / "plain", [6], M2S[:2], series=False)
    res = aggregate([tmp_path / "plain"], plots=False, n_boot=0)
    assert res["curves"] == [] and res["curve_crossings"] == []
    assert set(res["files"]) == {"csv", "crossings_csv", "peaks_csv", "critical_csv", "h5", "plots"}
    assert not (tmp_path / "plain" / "aggregate_curves.json").exists()
    assert set(read_aggregate(tmp_path / "plain" / "aggregate.h5")["tables"]) == {
        "points", "crossings", "peaks", "critical"}
    assert "continuous curves" not in format_report(res)


# ----------------------------------------------------------------------------- bad input
def test_series_must_be_a_bool(tmp_path, capsys):
    y = tmp_path / "c.yaml"
    y.write_text("schema_version: 1\nlattice: {N: [4]}\ngrid: {m2: [0.5], lam: [0.0]}\n"
                 "measure: {series: 3}\n")
    assert main(["validate", str(y)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: measure.series:") and "true or false" in err[0]


def test_series_default_keeps_point_ids():
    base = {"schema_version": 1, "lattice": {"N": [4]}, "grid": {"m2": [0.5], "lam": [0.0]}}
    ids = [p.point_id for p in parse_campaign(base).points()]
    off = parse_campaign({**base, "measure": {"series": False}})
    on = parse_campaign({**base, "measure": {"series": True}})
    assert [p.point_id for p in off.points()] == ids
    assert "series" not in off.to_dict()["measure"] and on.to_dict()["measure"]["series"] is True
    assert [p.point_id for p in on.points()] != ids                 # more results datasets
    assert parse_campaign(on.to_dict()) == on


def test_points_without_overlap_are_skipped_ranges_not_errors(tmp_path):
    """m2 = -1.45 and +0.5 at N = 8: E differs by far more than its spread, so neither point
    reweights to the other; the curve covers a little range around each point and the rest
    is reported with the library's refusal (the target and its ESS) and the support."""
    make_run(tmp_path / "gap", [8], [-1.45, 0.5])
    res = aggregate([tmp_path / "gap"], plots=True, n_boot=0)
    c = res["curves"][0]["curves"][8]
    assert c.reason == "" and len(c.segments) == 2                  # two groups, no joint solve
    assert len(c.skipped) == 1
    lo, hi, why = c.skipped[0]
    assert -1.45 < lo < hi < 0.5
    assert "lies beyond the overlap of the data" in why and "target m2 = " in why
    assert "the data support m2 in [" in why
    text = format_report(res)
    assert f"skipped m2 in [{lo:.6g}, {hi:.6g}]" in text
    js = json.loads((tmp_path / "gap" / "aggregate_curves.json").read_text())
    assert js["lines"][0]["skipped"][0]["reason"] == why
    assert js["crossings"] == []                                     # one size: nothing to cross


def test_explicit_m2_range_beyond_the_overlap_is_exit_2_and_writes_nothing(tmp_path, capsys):
    """`rgdist aggregate --m2-range LO:HI` asks for curves on exactly that range: where the
    data do not support it (no overlap between -1.45 and +0.5, or beyond the sampled m2) the
    command exits 2 naming the range and what the data support, and writes no file."""
    from rgdist.cli import main

    make_run(tmp_path / "gap", [8], [-1.45, 0.5])
    before = sorted(p.name for p in (tmp_path / "gap").iterdir())
    for rng, what in [("-1.45:0.5", "beyond the overlap the data support"),
                      ("-1.6:-1.45", "beyond the sampled m2"), ("3:1", "LO < HI")]:
        code = main(["aggregate", str(tmp_path / "gap"), f"--m2-range={rng}"])
        err = capsys.readouterr().err
        assert code == 2, (rng, err)
        assert "--m2-range" in err and what in err, (rng, err)
        assert sorted(p.name for p in (tmp_path / "gap").iterdir()) == before
    # a range inside one point's support is drawn
    assert main(["aggregate", str(tmp_path / "gap"), "--m2-range=-1.45:-1.449"]) == 0
    assert (tmp_path / "gap" / "aggregate_curves.json").exists()
