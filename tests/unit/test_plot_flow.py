"""RG-flow figures at small size: files written, axes labelled, bad input rejected."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rgdist.flow import compare_flows, forward_flow, gaussian_couplings, gaussian_flow, learned_flow
from rgdist.lattice import Lattice
from rgdist.plot.flow import (
    plot_flow_deviations,
    plot_flow_observable,
    plot_flow_panels,
    plot_flow_snapshots,
    plot_g2_flow,
    plot_running_couplings,
    save_figure,
)
from rgdist.rg import build_scheme

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def flows():
    lat = Lattice(6)
    G = lat.free_propagator(0.5)
    configs = lat.colored_noise(G, 64, torch.Generator().manual_seed(0))
    out = {}
    for name, params, t in (("carosso", dict(T=10.0, mu2=0.1), [0.0, 1.0, 10.0]),
                            ("polchinski", dict(T=2.0, Lambda0=4.0, m02=1.0, mu2=0.1), [0.0, 1.0, 2.0])):
        sch = build_scheme(name, lat, **params)
        ex = forward_flow(configs, sch, t, generator=torch.Generator().manual_seed(1), n_bins=8,
                          n_keep=2)
        le = learned_flow(lambda p, tt, s=sch: s.gaussian_score(p, tt, G), sch, 64, t, n_steps=4,
                          generator=torch.Generator().manual_seed(2), batch_size=64, n_bins=8,
                          prior_G=G)
        out[name] = (sch, ex, le, gaussian_flow(lat, sch, G, t))
    return lat, G, out


def _check_files(paths):
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p


def _labelled(ax):
    return bool(ax.get_xlabel().strip()) and bool(ax.get_ylabel().strip())


def test_snapshot_grid(flows, tmp_path):
    _, _, out = flows
    snaps = {name: v[1].snapshots for name, v in out.items()}
    times = {name: v[1].t for name, v in out.items()}
    fig = plot_flow_snapshots(snaps, times)
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 6
    assert images[0].get_ylabel() == "carosso" and images[0].get_title() == "t = 0"
    _check_files(save_figure(fig, tmp_path / "snapshots"))
    fig = plot_flow_snapshots({"carosso": snaps["carosso"][:, 0]}, times["carosso"], scale="image")
    assert len([ax for ax in fig.axes if ax.get_images()]) == 3
    with pytest.raises(ValueError, match="2D lattice"):
        plot_flow_snapshots({"x": np.zeros((3, 6))}, [0, 1, 2])
    with pytest.raises(ValueError, match="times"):
        plot_flow_snapshots({"x": np.zeros((3, 6, 6))}, [0, 1])


def test_observable_panels_and_deviations(flows, tmp_path):
    _, _, out = flows
    _, ex, le, ga = out["carosso"]
    fig = plot_flow_panels(ex, le, ga, title="Carosso, free field")
    axes = fig.axes
    assert len(axes) == 3 and all(_labelled(ax) for ax in axes)
    assert "m_R L" in axes[0].get_ylabel()
    assert axes[0].get_xscale() == "linear"
    _check_files(save_figure(fig, tmp_path / "panels"))
    fig = plot_flow_observable("chi", forward=ex)
    assert _labelled(fig.axes[0])
    fig = plot_flow_deviations(compare_flows(ex, le), ex.t)
    assert _labelled(fig.axes[0])
    _check_files(save_figure(fig, tmp_path / "devs"))
    with pytest.raises(ValueError, match="no observable"):
        plot_flow_observable("mass", forward=ex)
    with pytest.raises(ValueError, match="at least one"):
        plot_flow_observable("chi")


def test_couplings_and_g2(flows, tmp_path):
    lat, G, out = flows
    sch, ex, le, ga = out["carosso"]
    t = np.array([0.0, 0.01, 0.1, 1.0, 10.0])
    gauss = gaussian_couplings(lat, sch, G, t)
    learned = {"t": t, "phi2": gauss["phi2"] * 1.1, "grad2": gauss["grad2"] * 0.9,
               "phi4": np.zeros_like(t)}
    fig = plot_running_couplings(learned, gauss)
    ax = fig.axes[0]
    assert _labelled(ax) and ax.get_xscale() == "symlog"
    assert len(ax.get_lines()) >= 6
    _check_files(save_figure(fig, tmp_path / "couplings"))
    fig = plot_g2_flow(lat, ex, le, ga)
    ax = fig.axes[0]
    assert _labelled(ax) and ax.get_yscale() == "log"
    _check_files(save_figure(fig, tmp_path / "g2"))
    with pytest.raises(ValueError, match="t_indices"):
        plot_g2_flow(lat, ex, t_indices=[7])
    with pytest.raises(ValueError, match="lattice shape"):
        plot_g2_flow(Lattice(4), ex)
    with pytest.raises(ValueError, match="coupling"):
        plot_running_couplings({"t": t})
