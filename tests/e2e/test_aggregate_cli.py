"""`rgdist aggregate` and `rgdist plot` on a real (tiny) campaign, run as subprocesses:
the tables hold what the results file holds, one size gives no crossing (and says so),
figures are written; bad input exits with 2 and one "error:" line, writing nothing."""
from __future__ import annotations

import csv

import pytest

from rgdist import exitcodes

from campaign_util import rgdist, write_tiny

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agg")
    camp = write_tiny(tmp)
    camp.write_text(camp.read_text().replace("lam: [0.5, 1.0]", "lam: [0.5]"))  # 2 points
    out = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "run"


def test_aggregate_and_plot_a_real_run(run_dir):
    from rgdist.io.aggregate_file import read_aggregate
    from rgdist.io.results import read_results

    tmp = run_dir.parent
    out = rgdist(["aggregate", "run", "-o", "agg/phase.csv"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "only N = 8: not enough sizes for crossings" in out.stdout
    assert "critical line" in out.stdout and out.stderr.strip() == ""
    rows = list(csv.DictReader(open(tmp / "agg" / "phase.csv")))
    assert len(rows) == 4 and sorted({r["source"] for r in rows}) == ["diffusion", "hmc"]
    res = read_results(run_dir / "results.h5")["points"]
    for r in rows:
        arr = res[r["point_id"]]["arrays"]
        for name, col in (("m2", "M2"), ("binder", "binder"), ("chi", "chi"), ("xi2", "xi2")):
            v, e = arr[f"estimates/{r['source']}/{name}"]
            assert float(r[col]) == v and float(r[col + "_err"]) == e
        assert float(r["m2"]) == res[r["point_id"]]["attrs"]["m2"] and r["N"] == "8"
    h5 = read_aggregate(tmp / "agg" / "phase.h5")
    assert [str(s) for s in h5["tables"]["points"]["point_id"]] == [r["point_id"] for r in rows]
    crit = list(csv.DictReader(open(tmp / "agg" / "phase_critical.csv")))
    assert len(crit) == 2 and all("not enough sizes" in r["reason"] for r in crit)
    figs = sorted(p.name for p in (tmp / "agg" / "phase_plots").glob("*.png"))
    assert figs == ["binder_lam0.5_diffusion.png", "binder_lam0.5_hmc.png",
                    "chi_collapse_lam0.5_diffusion.png", "chi_collapse_lam0.5_hmc.png",
                    "xi_over_N_lam0.5_diffusion.png", "xi_over_N_lam0.5_hmc.png"]

    out = rgdist(["plot", "run"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    plots = run_dir / "plots"
    for stem in ("binder_lam0.5_hmc", "xi_over_N_lam0.5_diffusion"):
        for ext in (".png", ".pdf"):
            assert (plots / (stem + ext)).stat().st_size > 1000
    # flow figures for every point whose results hold flow data, else a note
    with_flow = sorted(pid for pid, p in res.items() if any(k.startswith("flow/") for k in p["arrays"]))
    panels = sorted(p.name[len("flow_"):-len("_panels.png")] for p in plots.glob("flow_*_panels.png"))
    assert panels == with_flow
    if with_flow:
        for pid in with_flow:
            for kind in ("deviations", "g2", "snapshots", "couplings"):
                assert (plots / f"flow_{pid}_{kind}.png").stat().st_size > 1000
    else:
        assert "no flow data" in out.stdout


def test_bad_input_exit_code_2(run_dir, tmp_path):
    import shutil

    (tmp_path / "plain").mkdir()
    shutil.copytree(run_dir, tmp_path / "unfinished", ignore=shutil.ignore_patterns("results.h5", "plots"))
    cases = [(["aggregate", "missing"], "does not exist"),
             (["aggregate", str(run_dir), "plain"], "not an rgdist run directory"),
             (["aggregate", "unfinished"], "no results.h5 yet"),
             (["plot", "missing"], "does not exist")]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    before_run = sorted(p.name for p in run_dir.rglob("*"))
    for argv, match in cases:
        out = rgdist(argv, cwd=tmp_path)
        assert out.returncode == exitcodes.BAD_INPUT, (argv, out.stderr[-2000:])
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], (argv, lines)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert sorted(p.name for p in run_dir.rglob("*")) == before_run


# --------------------------------------------------------------------- a stored layout-1 run
def _layout1_run(tmp_path):
    """tests/data: the run directory skeleton (campaign.json, status/) of a tiny 2-point
    campaign with flow data and a correction stage, and its results file, written by the
    layout-1 writer (points/<id>/flow/exact/..., points/<id>/exact/...)."""
    import shutil
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    run = tmp_path / "old"
    shutil.copytree(data / "layout1_run", run)
    shutil.copyfile(data / "layout1_results.h5", run / "results.h5")
    return run


def test_status_aggregate_and_plot_read_a_layout1_run(tmp_path):
    import h5py
    import numpy as np

    from rgdist.io.aggregate_file import read_aggregate
    from rgdist.io.results import read_results

    run = _layout1_run(tmp_path)
    with h5py.File(run / "results.h5", "r") as f:
        assert int(f.attrs["rgdist_layout"]) == 1
        pids = sorted(f["points"])
        assert all("exact" in f["points"][p]["flow"] and "exact" in f["points"][p] for p in pids)
    st = rgdist(["status", "old"], cwd=tmp_path)
    assert st.returncode == 0, st.stderr[-3000:]
    assert "not running; 2/2 points done; results.h5 written" in st.stdout
    assert all(pid in st.stdout for pid in pids) and st.stderr.strip() == ""

    out = rgdist(["aggregate", "old", "-o", "agg/old"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 grid points, 4 rows (point x source)" in out.stdout and out.stderr.strip() == ""
    rows = list(csv.DictReader(open(tmp_path / "agg" / "old.csv")))
    res = read_results(run / "results.h5")["points"]
    assert sorted({r["point_id"] for r in rows}) == pids and len(rows) == 4
    for r in rows:
        for name, col in (("binder", "binder"), ("chi", "chi"), ("m2", "M2"), ("Z", "Z")):
            v, e = res[r["point_id"]]["arrays"][f"estimates/{r['source']}/{name}"]
            assert float(r[col]) == v and float(r[col + "_err"]) == e
    h5 = read_aggregate(tmp_path / "agg" / "old.h5")
    assert [str(s) for s in h5["tables"]["points"]["point_id"]] == [r["point_id"] for r in rows]

    # the flow data come out under the layout-2 names, with the layout-1 values
    with h5py.File(run / "results.h5", "r") as f:
        for pid in pids:
            arr = res[pid]["arrays"]
            assert not any(k.startswith(("flow/exact", "exact/")) for k in arr)
            for k in ("t", "m_R", "g2", "snapshots"):
                assert np.array_equal(arr[f"flow/forward/{k}"], f[f"points/{pid}/flow/exact/{k}"][()],
                                      equal_nan=True)
            assert float(arr["correct/acceptance"]) == float(f[f"points/{pid}/exact/acceptance"][()])

    out = rgdist(["plot", "old"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "note: " not in out.stdout, out.stdout  # every flow group is understood
    plots = run / "plots"
    for pid in pids:
        for kind in ("panels", "deviations", "g2", "snapshots", "couplings"):
            assert (plots / f"flow_{pid}_{kind}.png").stat().st_size > 1000
