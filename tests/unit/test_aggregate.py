"""`rgdist aggregate` / `rgdist plot` end to end on small fake results files written with the
real writer (rgdist.io.results.write_results, serial Comm): tables, crossings, figures and bad
input (exit code 2, one "error:" line, nothing written)."""
from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

from rgdist.campaign.aggregate import aggregate, format_report, plot_run  # noqa: E402
from rgdist.campaign.spec import parse_campaign  # noqa: E402
from rgdist.cli import main  # noqa: E402
from rgdist.io.aggregate_file import read_aggregate  # noqa: E402
from rgdist.io.atomic import atomic_write_json  # noqa: E402
from rgdist.io.results import write_results  # noqa: E402
from rgdist.parallel.comm import Comm  # noqa: E402

torch.set_num_threads(1)

M2C = -0.6            # the known crossing of the synthetic curves
U_STAR = (2 / 3) / (1 + math.exp(-2.39))  # their common value there (= 0.6107)
XI_STAR = 0.905
GRID = [round(M2C + 0.025 * k, 10) for k in range(-6, 7)]  # spacing 0.4 / N_b (N_b = 16)
DU = 0.003


def campaign_mapping(sizes, m2=GRID, lam=(0.5,), seed=3):
    return {"schema_version": 1, "name": "fake", "seed": seed,
            "lattice": {"N": list(sizes), "d": 2}, "grid": {"m2": list(m2), "lam": list(lam)}}


def synthetic_estimates(N, m2, rng) -> dict:
    """Binder, xi2 and chi curves of one size with a known crossing at M2C; x = (m2 - M2C) N."""
    x = (m2 - M2C) * N
    u = (2 / 3) / (1 + math.exp(1.2 * x - 2.39))
    xi2 = N * (XI_STAR - 0.3 * math.tanh(0.5 * x))
    chi_c = 0.05 * N ** 1.75 * math.exp(-x * x / 4)
    vals = {"binder": (u + DU * rng.standard_normal(), DU),
            "xi2": (xi2 + 0.01 * N * rng.standard_normal(), 0.01 * N),
            "chi_conn": (chi_c * (1 + 0.02 * rng.standard_normal()), 0.02 * chi_c),
            "chi": (3 * chi_c, 0.06 * chi_c), "abs_m": (0.5, 0.01), "m_R": (1 / math.sqrt(xi2), 0.01),
            "lambda_R": (5.0, 0.1), "Z": (1.0, 0.02), "m2": (0.3 + m2 * 1e-3, 0.004),
            "m4": (0.2, 0.003)}
    return {k: np.array(v, dtype=np.float64) for k, v in vals.items()}


def make_run(path, mapping, noise_seed=0, arrays_fn=None):
    """A run directory (campaign.json + results.h5) written by the real writers."""
    camp = parse_campaign(mapping)
    path.mkdir(parents=True)
    atomic_write_json(path / "campaign.json", camp.to_dict())
    points = camp.points()
    owned = {}
    for p in points:
        if arrays_fn is not None:
            owned[p.point_id] = arrays_fn(p)
            continue
        arrays = {}
        for k, src in enumerate(("hmc", "diffusion")):
            rng = np.random.default_rng([noise_seed, k, p.index])
            for name, v in synthetic_estimates(p.N[0], p.m2, rng).items():
                arrays[f"estimates/{src}/{name}"] = v
        owned[p.point_id] = arrays
    write_results(path / camp.output.results, camp, points, owned, Comm.serial())
    return camp


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    make_run(tmp / "scan_N8", campaign_mapping([8]))
    make_run(tmp / "scan_N16", campaign_mapping([16]), noise_seed=1)
    return tmp


@pytest.fixture(scope="module")
def aggregated(two_runs):
    out = two_runs / "agg" / "phase"
    res = aggregate([two_runs / "scan_N8", two_runs / "scan_N16"], str(out), n_boot=400)
    return two_runs, out, res


def _check_figure(path):
    assert path.stat().st_size > 1000, path
    head = path.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" if path.suffix == ".png" else head[:5] == b"%PDF-"


def test_tables_csv_and_h5(aggregated):
    tmp, out, res = aggregated
    rows = list(csv.DictReader(open(out.with_name("phase.csv"))))
    assert len(rows) == 2 * len(GRID) * 2  # sizes x m2 x sources
    header = list(rows[0])
    assert header[:10] == ["point_id", "source", "run_dir", "d", "shape", "N", "lam", "m2", "kappa", "lam_h"]
    assert {"M2", "M2_err", "M4", "M4_err", "binder_err", "xi2"} <= set(header)
    # values read back bit for bit: the <M^2> estimate is M2, the coupling m2 stays m2
    r = next(r for r in rows if r["shape"] == "16x16" and r["source"] == "diffusion"
             and float(r["m2"]) == GRID[3])
    rng = np.random.default_rng([1, 1, 3])  # noise seed 1, diffusion, point index 3 of scan_N16
    want = synthetic_estimates(16, GRID[3], rng)
    assert float(r["binder"]) == want["binder"][0] and float(r["binder_err"]) == want["binder"][1]
    assert float(r["M2"]) == want["m2"][0] and float(r["M4_err"]) == want["m4"][1]
    assert r["N"] == "16" and r["d"] == "2" and r["run_dir"].endswith("scan_N16")
    h5 = read_aggregate(out.with_name("phase.h5"))
    pts = h5["tables"]["points"]
    assert list(pts["source"]) == [r["source"] for r in rows]
    assert list(pts["point_id"]) == [r["point_id"] for r in rows]
    np.testing.assert_array_equal(pts["binder"], [float(r["binder"]) for r in rows])
    np.testing.assert_array_equal(pts["N"], [int(r["N"]) for r in rows])
    assert h5["attrs"]["kind"] == "aggregate" and h5["attrs"]["n_boot"] == 400
    assert len(h5["attrs"]["run_dirs"]) == 2
    crit = h5["tables"]["critical"]
    assert sorted(crit["source"]) == ["diffusion", "hmc"]
    np.testing.assert_array_equal(np.sort(crit["m2_c"]), np.sort([c["m2_c"] for c in res["critical"]]))


def test_known_crossing_recovered(aggregated):
    _, _, res = aggregated
    assert len(res["critical"]) == 2  # one lam, two sources
    for c in res["critical"]:
        assert c["reason"] == "", c
        assert 0 < c["dm2"] < 0.05
        assert abs(c["m2_c"] - M2C) < 4 * c["dm2"], c
        assert abs(c["value"] - U_STAR) < 4 * c["dvalue"], c
        assert c["pairs"] == "8-16"
        assert abs(c["gamma_over_nu"] - 1.75) < 4 * c["dgamma_over_nu"], c
        assert 0 < c["dgamma_over_nu"] < 0.2
    xi = [c for c in res["crossings"] if c["observable"] == "xi_over_N"]
    assert len(xi) == 2
    for c in xi:
        assert abs(c["m2"] - M2C) < 4 * c["dm2"] and abs(c["value"] - XI_STAR) < 4 * c["dvalue"], c
    assert {p["N"] for p in res["peaks"]} == {8, 16}
    for p in res["peaks"]:
        assert abs(p["m2"] - M2C) < 4 * p["dm2"] + 1e-9, p
    text = format_report(res)
    for s in ("critical line", "U crossing", "8-16", "gamma/nu", "phase.csv", "point"):
        assert s in text
    assert "not enough sizes" not in text
    crit_csv = list(csv.DictReader(open(res["files"]["critical_csv"])))
    assert [float(r["m2_c"]) for r in crit_csv] == [c["m2_c"] for c in res["critical"]]


def test_figures_written(aggregated):
    tmp, out, res = aggregated
    plots = tmp / "agg" / "phase_plots"
    names = {p.name for p in plots.iterdir()}
    for stem in ("binder_lam0.5_hmc", "binder_lam0.5_diffusion", "xi_over_N_lam0.5_hmc",
                 "chi_collapse_lam0.5_diffusion", "phase_diagram"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    assert sorted(map(str, res["files"]["plots"])) == sorted(str(plots / n) for n in names)
    for p in res["files"]["plots"]:
        _check_figure(p)


def test_one_size_real_accumulators(tmp_path):
    """Estimates computed by the real writer from accumulators of Gaussian fields; one size."""
    from rgdist.lattice import Lattice
    from rgdist.measure import ObservableAccumulator

    lat = Lattice(4)
    accs = {}

    def arrays(p):
        out = {}
        for k, src in enumerate(("hmc", "diffusion")):
            g = torch.Generator().manual_seed(100 * p.index + k)
            phi = lat.colored_noise(lat.free_propagator(abs(p.m2) + 0.5), 64, g)
            acc = ObservableAccumulator(lat, 4).update(phi, torch.arange(64) % 4)
            accs[(p.point_id, src)] = acc.estimate()
            out.update({f"acc_{src}/{n}": np.asarray(v) for n, v in acc.to_arrays().items()})
        return out

    make_run(tmp_path / "run", campaign_mapping([4], m2=[-0.2, 0.3], lam=[0.5, 1.0]), arrays_fn=arrays)
    res = aggregate([tmp_path / "run"], plots=False)
    text = format_report(res)
    assert text.count("only N = 4: not enough sizes for crossings") == 4  # 2 lam x 2 sources
    assert res["files"]["plots"] == [] and not (tmp_path / "run" / "aggregate_plots").exists()
    rows = list(csv.DictReader(open(tmp_path / "run" / "aggregate.csv")))
    assert len(rows) == 8
    for r in rows:
        est = accs[(r["point_id"], r["source"])]
        assert float(r["M2"]) == float(est["m2"][0]) and float(r["M4"]) == float(est["m4"][0])
        assert float(r["chi_err"]) == float(est["chi"][1]) and float(r["binder"]) == float(est["binder"][0])
        assert r["N"] == "4" and r["shape"] == "4x4"
    crit = list(csv.DictReader(open(tmp_path / "run" / "aggregate_critical.csv")))
    assert len(crit) == 4 and all("not enough sizes" in r["reason"] for r in crit)


# ----------------------------------------------------------------------------- bad input
def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _expect_bad(capsys, argv, root, match):
    before = _snapshot(root)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert _snapshot(root) == before  # nothing written


def test_bad_input_exit_2_nothing_written(two_runs, tmp_path, capsys):
    root = tmp_path
    good = root / "good"
    shutil.copytree(two_runs / "scan_N8", good)
    out = str(root / "out" / "x")
    _expect_bad(capsys, ["aggregate", str(root / "missing"), "-o", out], root, "does not exist")
    (root / "plain").mkdir()
    _expect_bad(capsys, ["aggregate", str(good), str(root / "plain"), "-o", out], root,
                "not an rgdist run directory")
    nores = root / "nores"
    nores.mkdir()
    shutil.copy(good / "campaign.json", nores / "campaign.json")
    _expect_bad(capsys, ["aggregate", str(good), str(nores), "-o", out], root, "no results.h5 yet")
    # the same point ids (same campaign) with other values
    make_run(root / "other", campaign_mapping([8]), noise_seed=7)
    _expect_bad(capsys, ["aggregate", str(good), str(root / "other"), "-o", out], root,
                "with different results")
    # the same physics point from a campaign with other settings (another seed)
    make_run(root / "reseeded", campaign_mapping([8], seed=4))
    _expect_bad(capsys, ["aggregate", str(good), str(root / "reseeded"), "-o", out], root,
                "different settings")
    (root / "torn").mkdir()
    shutil.copy(good / "campaign.json", root / "torn" / "campaign.json")
    (root / "torn" / "results.h5").write_bytes(b"not hdf5")
    _expect_bad(capsys, ["aggregate", str(root / "torn"), "-o", out], root, "unreadable")
    _expect_bad(capsys, ["plot", str(root / "plain")], root, "not an rgdist run directory")
    # an identical copy is not a conflict: counted once
    shutil.copytree(good, root / "copy")
    res = aggregate([good, root / "copy"], out, plots=False, n_boot=0)
    assert len(res["rows"]) == 2 * len(GRID)
    assert any("identical results: counted once" in n for n in res["notes"])


# ----------------------------------------------------------------------------- plot verb
def _flow_arrays(K=3, N=4):
    from rgdist.flow import FlowResult

    t = np.linspace(0.0, 2.0, K)
    out = {}
    for kind, shift in (("forward", 0.0), ("learned", 0.01), ("gaussian", 0.0)):
        vals = {n: np.linspace(1.0, 2.0, K) + shift for n in ("m_R", "m_R_L", "Z", "lambda_R", "chi")}
        vals["g2"] = np.ones((K, N, N)) + shift
        errs = {n: (0.0 if kind == "gaussian" else 0.02) * np.ones_like(v) for n, v in vals.items()}
        snaps = np.random.default_rng(0).standard_normal((K, 2, N, N)) if kind != "gaussian" else None
        fr = FlowResult(t=t, values=vals, errors=errs, snapshots=snaps, kind=kind)
        out.update({f"flow/{kind}/{k}": v for k, v in fr.to_arrays().items()})
    out.update({"flow/couplings/learned/t": t, "flow/couplings/learned/phi2": 0.5 * t,
                "flow/couplings/gaussian/t": t, "flow/couplings/gaussian/phi2": 0.4 * t,
                "flow/deviation/m_R": np.full(K, 0.01 / math.sqrt(2 * 0.02 ** 2))})
    return out


def test_plot_run_with_and_without_flow(tmp_path, capsys):
    flow = _flow_arrays()

    def arrays(p):
        rng = np.random.default_rng(p.index)
        out = {f"estimates/hmc/{k}": v for k, v in synthetic_estimates(4, p.m2, rng).items()}
        if p.index == 0:
            out.update(flow)
        return out

    camp = make_run(tmp_path / "run", campaign_mapping([4], m2=GRID[5:8]), arrays_fn=arrays)
    pid = camp.points()[0].point_id
    assert main(["plot", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    plots = tmp_path / "run" / "plots"
    for stem in ("binder_lam0.5_hmc", "xi_over_N_lam0.5_hmc", f"flow_{pid}_panels",
                 f"flow_{pid}_deviations", f"flow_{pid}_g2", f"flow_{pid}_snapshots",
                 f"flow_{pid}_couplings"):
        for ext in (".png", ".pdf"):
            _check_figure(plots / (stem + ext))
    assert "not enough sizes for crossings" in text and f"flow_{pid}_panels" in text
    assert len(list(plots.glob("flow_*.png"))) == 5  # only the point with flow data
    # no flow data and a non-hypercubic lattice: notes, no figures at all
    make_run(tmp_path / "noflow", {**campaign_mapping([[4, 8]], m2=[M2C]), "lattice": {"N": [[4, 8]], "d": 2}},
             arrays_fn=lambda p: {f"estimates/hmc/{k}": v for k, v in
                                  synthetic_estimates(4, p.m2, np.random.default_rng(0)).items()})
    res = plot_run(tmp_path / "noflow", str(tmp_path / "p2"), n_boot=0)
    assert any("no flow data" in n for n in res["notes"])
    assert any("non-hypercubic lattices ['4x8']" in n for n in res["notes"])
    assert res["files"] == [] and res["analyses"] == []
