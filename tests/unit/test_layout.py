"""Results-file layouts (rgdist.io.layout): layout-1 names map to layout 2, layout-2 names are
left alone, and the readers (read_results, read_point_estimates, content_digest) give layout-2
names for files of either layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")

from rgdist.io import h5  # noqa: E402
from rgdist.io.layout import FLOW_KINDS, current_names, file_layout, point_name, to_current  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("old, new", [
    ("flow/exact/t", "flow/forward/t"),
    ("flow/exact/g2", "flow/forward/g2"),
    ("flow/exact", "flow/forward"),
    ("flow/learned/m_R", "flow/learned/m_R"),
    ("flow/gaussian/t", "flow/gaussian/t"),
    ("flow/couplings/learned/phi2", "flow/couplings/learned/phi2"),
    ("flow/deviation/m_R", "flow/deviation/m_R"),
    ("flow", "flow"),
    ("exact/ess_fraction", "correct/ess_fraction"),
    ("exact/reweight/chi", "correct/reweight/chi"),
    ("exact", "correct"),
    ("estimates/hmc/chi", "estimates/hmc/chi"),
    ("acc_diffusion/sum_m2", "acc_diffusion/sum_m2"),
    ("exactly/x", "exactly/x"),
    ("flow/exactly/t", "flow/exactly/t"),
])
def test_point_names(old, new):
    assert point_name(old, 1) == new
    assert point_name(old, 2) == old  # layout 2 is already current: nothing renamed
    assert point_name(new, 1) == new  # layout-2 names are fixed points of the layout-1 map


def test_root_paths_and_attributes():
    pid = "01ffa73c973b2294"
    assert to_current(f"points/{pid}/flow/exact/m_R", 1) == f"points/{pid}/flow/forward/m_R"
    assert to_current(f"/points/{pid}/exact/mh/chi", 1) == f"/points/{pid}/correct/mh/chi"
    assert to_current(f"points/{pid}/exact@sha256", 1) == f"points/{pid}/correct@sha256"
    assert to_current(f"points/{pid}@m2", 1) == f"points/{pid}@m2"
    assert to_current("/@rgdist_layout", 1) == "/@rgdist_layout"
    assert to_current("points", 1) == "points" and to_current("exact/x", 1) == "exact/x"
    assert to_current(f"points/{pid}/flow/exact/m_R", 2) == f"points/{pid}/flow/exact/m_R"
    assert current_names({"flow/exact/t": 1, "exact/n": 2}, 1) == {"flow/forward/t": 1, "correct/n": 2}
    assert current_names({f"points/{pid}/exact/n": 2}, 1, below_point=False) == {f"points/{pid}/correct/n": 2}
    assert (file_layout({}), file_layout({"rgdist_layout": 1}), file_layout({"rgdist_layout": 2})) == (1, 1, 2)
    assert FLOW_KINDS == ("forward", "learned", "gaussian")


def test_stored_layout1_file_reads_with_layout2_names():
    import h5py

    from rgdist.io.aggregate_file import read_point_estimates
    from rgdist.io.results import content_digest, read_results

    path = DATA / "layout1_results.h5"
    with h5py.File(path, "r") as f:
        assert int(f.attrs["rgdist_layout"]) == 1
        pids = sorted(f["points"])
        raw = {pid: {k: np.asarray(f["points"][pid]["flow"]["exact"][k])
                     for k in f["points"][pid]["flow"]["exact"]} for pid in pids}
        ess = {pid: np.asarray(f["points"][pid]["exact"]["ess_fraction"]) for pid in pids}
    res = read_results(path)
    assert sorted(res["points"]) == pids and len(pids) == 2
    for pid in pids:
        a = res["points"][pid]["arrays"]
        assert not any(k.startswith(("flow/exact/", "exact/")) for k in a)
        assert {k[len("flow/forward/"):] for k in a if k.startswith("flow/forward/")} == set(raw[pid])
        for k, v in raw[pid].items():
            assert np.array_equal(a[f"flow/forward/{k}"], v, equal_nan=True)
        assert np.array_equal(a["correct/ess_fraction"], ess[pid])
        assert any(k.startswith("flow/learned/") for k in a) and any(k.startswith("flow/gaussian/") for k in a)
    est = read_point_estimates(path, flow=True)
    for pid in pids:
        fl = est["points"][pid]["flow"]
        assert sorted({k.split("/")[0] for k in fl}) == ["couplings", "deviation", "forward", "gaussian", "learned"]
        assert np.array_equal(fl["forward/m_R"], raw[pid]["m_R"], equal_nan=True)
        assert est["points"][pid]["estimates"]["hmc"]["chi"] == tuple(res["points"][pid]["arrays"]["estimates/hmc/chi"])
    dig = content_digest(path)
    assert not any("/flow/exact" in k or f"points/{pids[0]}/exact" in k for k in dig)
    assert sum(k.endswith("flow/forward/m_R") for k in dig) == 2
    assert sum(k.endswith("/correct/ess_fraction") for k in dig) == 2


def test_layout2_file_is_read_as_is(tmp_path, monkeypatch, serial_comm):
    """A file that says layout 2 is not renamed, even where a name reads like layout 1."""
    from rgdist.io.aggregate_file import read_point_estimates
    from rgdist.io.results import content_digest, read_results

    monkeypatch.setattr(h5, "LAYOUT_VERSION", max(h5.LAYOUT_VERSION, 2))
    path = tmp_path / "two.h5"
    arrays = {"points/p0/flow/forward/t": np.arange(3.0), "points/p0/flow/exact/t": np.ones(3),
              "points/p0/correct/ess_fraction": np.asarray(0.5), "points/p0/exact/x": np.asarray(1.0),
              "points/p0/estimates/hmc/chi": np.asarray([2.0, 0.1])}
    f = h5.open_h5(path, "w", serial_comm)
    h5.write_owned(f, arrays, serial_comm)
    h5.write_attrs(f, {"rgdist_layout": 2}, serial_comm)
    f.close()
    a = read_results(path)["points"]["p0"]["arrays"]
    assert sorted(a) == ["correct/ess_fraction", "estimates/hmc/chi", "exact/x", "flow/exact/t", "flow/forward/t"]
    assert np.array_equal(a["flow/forward/t"], np.arange(3.0))
    fl = read_point_estimates(path, flow=True)["points"]["p0"]["flow"]
    assert sorted(fl) == ["exact/t", "forward/t"]
    assert "points/p0/exact/x" in content_digest(path)
