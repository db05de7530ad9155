"""RG-flow figures (matplotlib imported lazily, Agg canvas, no pyplot state).

Each function takes the data (``rgdist.flow.FlowResult`` objects, coupling dicts, field
snapshots) and an optional ``ax`` (or ``fig`` for multi-panel figures) and returns the figure.
Flow times are in the scheme's own units (lattice units for Carosso, log Lambda for
Polchinski); masses are in lattice units (a = 1) unless the observable says otherwise
(``m_R_L`` = m_R L is dimensionless). :func:`save_figure` (shared with rgdist.plot.phase)
writes PNG and PDF.
The forward flow (arguments ``forward``) is the exact RG flow of the ensemble; the figures
label it "exact". The flow baseline (arguments ``baseline``: the CNF of rgdist.flow.baseline,
a FlowResult whose ``t`` is its own flow time tau in [0, 1], tau = 0 the Gaussian prior and
tau = 1 the model) is never drawn on a scheme's t axis: it gets its own panels, labelled tau.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from rgdist.plot.phase import save_figure

__all__ = [
    "plot_flow_snapshots",
    "plot_flow_observable",
    "plot_flow_panels",
    "plot_running_couplings",
    "plot_g2_flow",
    "plot_flow_deviations",
    "plot_baseline_observable",
    "plot_baseline_panels",
    "save_figure",
]

T_LABEL = r"flow time $t$ (scheme units)"
TAU_LABEL = r"baseline CNF time $\tau$ (0: Gaussian prior, 1: model)"
OBS_LABELS = {
    "m_R": r"$m_R = 1/\xi_2$ (lattice units, $a=1$)",
    "m_R_L": r"$m_R L$ (dimensionless)",
    "m_R_phys": r"$m_R$ (units of $1/L_\mathrm{phys}$)",
    "Z": r"$Z = m_R^2\, \tilde G_2(0)$",
    "lambda_R": r"$\lambda_R = (3 - \langle M^4\rangle/\langle M^2\rangle^2)\,(L/\xi_2)^d$",
    "chi": r"$\chi = V \langle M^2\rangle$",
    "chi_conn": r"$\chi_\mathrm{conn} = V(\langle M^2\rangle - \langle |M|\rangle^2)$",
    "binder": r"Binder cumulant $U = 1 - \langle M^4\rangle/3\langle M^2\rangle^2$",
    "xi2": r"$\xi_2$ (lattice units)",
    "abs_m": r"$\langle |M| \rangle$",
    "m2": r"$\langle M^2 \rangle$",
    "m4": r"$\langle M^4 \rangle$",
    "m": r"$\langle M \rangle$",
    "mean_max_abs": r"$\langle \max_x |\phi_x| \rangle$",
    "max_abs": r"$\max |\phi|$ (ensemble)",
}
COUPLING_LABELS = {"phi2": r"$c_{\phi^2}$", "grad2": r"$c_{(\nabla\phi)^2}$",
                   "phi4": r"$c_{\phi^4}$", "phi6": r"$c_{\phi^6}$"}


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes(ax, figsize=(5.6, 4.2)):
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
    return fig, fig.add_subplot()


def _time_axis(ax, t) -> None:
    """Symlog x axis when the times span more than two decades (t = 0 stays visible)."""
    t = np.asarray(t, dtype=np.float64)
    pos = t[t > 0]
    if pos.size and pos.max() / pos.min() > 100:
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.5)
    ax.set_xlabel(T_LABEL)


def _check_result(res, name, label):
    if res is None:
        return None
    if not hasattr(res, "values") or not hasattr(res, "t"):
        raise ValueError(f"{label} must be a FlowResult, got {type(res).__name__}")
    if name not in res.values:
        raise ValueError(f"{label} flow has no observable {name!r}; it has {list(res.values)}")
    return res


# --- field images along the flow ------------------------------------------------------------
def plot_flow_snapshots(snapshots: Mapping[str, np.ndarray], t, *, fig=None, sample: int = 0,
                        scale: str = "row", cmap: str = "RdBu_r"):
    """Images of one field along the flow: rows = schemes (keys of ``snapshots``), columns =
    flow times. ``snapshots[name]``: (K, *shape) or (K, n, *shape) (FlowResult.snapshots) of a
    2D lattice; ``t``: the K times, or a mapping scheme -> times. ``scale``: "row" (one
    symmetric colour scale per scheme: shows variance collapse) or "image" (each image its own)."""
    if not isinstance(snapshots, Mapping) or not snapshots:
        raise ValueError("snapshots must be a non-empty mapping scheme name -> array (K, [n,] N, N)")
    if scale not in ("row", "image"):
        raise ValueError(f"scale must be 'row' or 'image', got {scale!r}")
    rows = []
    for name, arr in snapshots.items():
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim == 4:
            if not 0 <= sample < a.shape[1]:
                raise ValueError(f"sample must lie in [0, {a.shape[1]}) for {name!r}, got {sample}")
            a = a[:, sample]
        if a.ndim != 3:
            raise ValueError(f"snapshots[{name!r}] must have shape (K, [n,] N1, N2) of a 2D "
                             f"lattice, got {np.shape(arr)}")
        times = np.asarray(t[name] if isinstance(t, Mapping) else t, dtype=np.float64).reshape(-1)
        if times.size != a.shape[0]:
            raise ValueError(f"{name!r}: {a.shape[0]} snapshots but {times.size} times")
        rows.append((name, a, times))
    n_cols = max(a.shape[0] for _, a, _ in rows)
    if fig is None:
        fig = _new_figure((1.7 * n_cols + 1.0, 1.8 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (name, a, times) in enumerate(rows):
        vmax_row = float(np.abs(a).max()) or 1.0
        im = None
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= a.shape[0]:
                ax.set_visible(False)
                continue
            vmax = vmax_row if scale == "row" else (float(np.abs(a[c]).max()) or 1.0)
            im = ax.imshow(a[c], cmap=cmap, vmin=-vmax, vmax=vmax, origin="lower",
                           interpolation="nearest")
            ax.set_title(f"t = {times[c]:.3g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
        if im is not None and scale == "row":
            fig.colorbar(im, ax=list(axes[r, :]), shrink=0.8, label=r"$\phi_x$")
    fig.suptitle(r"field $\phi_t$ along the forward RG flow", fontsize=11)
    return fig


# --- observables along the flow ---------------------------------------------------------------
def plot_flow_observable(name: str, forward=None, learned=None, gaussian=None, ax=None, *,
                         labels: Sequence[str] = ("exact flow", "learned flow", "Gaussian closed form")):
    """``name`` vs flow time: the forward (exact RG) flow as a line with a +-1 sigma band, the
    learned flow as points with error bars, the Gaussian closed form as a dashed line (any of
    the three may be None)."""
    if forward is None and learned is None and gaussian is None:
        raise ValueError("give at least one of forward, learned, gaussian")
    for res, label in ((forward, "forward"), (learned, "learned"), (gaussian, "gaussian")):
        _check_result(res, name, label)
    fig, ax = _axes(ax)
    all_t = []
    if forward is not None:
        v, e = (np.asarray(x, dtype=np.float64) for x in forward[name])
        line, = ax.plot(forward.t, v, "-", color="C0", lw=1.5, label=labels[0])
        ax.fill_between(forward.t, v - e, v + e, color=line.get_color(), alpha=0.25, lw=0)
        all_t.append(forward.t)
    if learned is not None:
        v, e = (np.asarray(x, dtype=np.float64) for x in learned[name])
        ax.errorbar(learned.t, v, yerr=e, fmt="o", ms=4, color="C3", capsize=2, lw=1,
                    label=labels[1])
        all_t.append(learned.t)
    if gaussian is not None:
        v, _ = gaussian[name]
        ax.plot(gaussian.t, v, "--", color="0.3", lw=1, label=labels[2])
        all_t.append(gaussian.t)
    _time_axis(ax, np.concatenate(all_t))
    ax.set_ylabel(OBS_LABELS.get(name, name))
    ax.legend(fontsize=8)
    return fig


def plot_flow_panels(forward=None, learned=None, gaussian=None, names=("m_R_L", "Z", "lambda_R"),
                     *, fig=None, title: str | None = None, baseline=None,
                     targets: Mapping | None = None, reweighted: Mapping | None = None):
    """One panel per observable (default m_R L, Z, lambda_R), as :func:`plot_flow_observable`;
    with ``baseline`` a second row of the same observables along the baseline's own time tau
    (:func:`plot_baseline_observable`, with ``targets`` and ``reweighted`` by name)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("names must list at least one observable")
    scheme_row = any(r is not None for r in (forward, learned, gaussian)) or baseline is None
    n_rows = int(scheme_row) + int(baseline is not None)
    if fig is None:
        fig = _new_figure((4.2 * len(names), 3.6 * n_rows))
    axes = fig.subplots(n_rows, len(names), squeeze=False)
    for k, name in enumerate(names):
        if scheme_row:
            plot_flow_observable(name, forward, learned, gaussian, ax=axes[0, k])
        if baseline is not None:
            plot_baseline_observable(name, baseline, ax=axes[-1, k],
                                     target=(targets or {}).get(name),
                                     reweighted=(reweighted or {}).get(name))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_baseline_observable(name: str, baseline, ax=None, *, target=None, reweighted=None,
                             labels: Sequence[str] = ("flow baseline (CNF)", "HMC",
                                                      "baseline, reweighted")):
    """``name`` along the flow baseline's own time tau in [0, 1] (not a scheme time): the CNF
    ensemble at each recorded tau (squares with error bars), ``target`` (value, err), e.g.
    HMC at the point, as a dotted line with a +-1 sigma band, and the importance-reweighted
    baseline ``reweighted`` (value, err) as a star just right of tau = 1."""
    _check_result(baseline, name, "baseline")
    fig, ax = _axes(ax)
    v, e = (np.asarray(x, dtype=np.float64) for x in baseline[name])
    ax.errorbar(baseline.t, v, yerr=np.where(np.isfinite(e), e, 0.0), fmt="s-", ms=3.5,
                color="C2", capsize=2, lw=1, label=labels[0])
    if target is not None:
        tv, te = (float(x) for x in target)
        ax.axhline(tv, color="C0", ls=":", lw=1.2, label=labels[1])
        if np.isfinite(te):
            ax.axhspan(tv - te, tv + te, color="C0", alpha=0.15, lw=0)
    if reweighted is not None:
        rv, re_ = (float(x) for x in reweighted)
        ax.errorbar([1.02], [rv], yerr=[re_ if np.isfinite(re_) else 0.0], fmt="*", ms=9,
                    color="C1", capsize=2, lw=1, label=labels[2])
    ax.set_xlim(-0.03, 1.06)
    ax.set_xlabel(TAU_LABEL)
    ax.set_ylabel(OBS_LABELS.get(name, name))
    ax.legend(fontsize=8)
    return fig


def plot_baseline_panels(baseline, names=("m_R", "Z", "lambda_R", "chi", "binder", "mean_max_abs"),
                         *, targets: Mapping | None = None, reweighted: Mapping | None = None,
                         fig=None, title: str | None = None, n_cols: int = 3):
    """The flow baseline alone: one :func:`plot_baseline_observable` panel per name present in
    ``baseline`` (default m_R, Z, lambda_R, chi, U, <max_x |phi_x|>), ``n_cols`` per row."""
    names = [n for n in ([names] if isinstance(names, str) else names) if n in baseline]
    if not names:
        raise ValueError(f"the baseline flow has none of the observables; it has {list(baseline.values)}")
    n_cols = min(n_cols, len(names))
    n_rows = -(-len(names) // n_cols)
    if fig is None:
        fig = _new_figure((4.2 * n_cols, 3.4 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).reshape(-1)
    for ax, name in zip(axes, names):
        plot_baseline_observable(name, baseline, ax=ax, target=(targets or {}).get(name),
                                 reweighted=(reweighted or {}).get(name))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_flow_deviations(deviations: Mapping[str, np.ndarray], t, ax=None, *, band: float = 3.0):
    """Pulls (learned - forward)/sigma vs flow time per observable, with a +-``band`` sigma band."""
    fig, ax = _axes(ax)
    t = np.asarray(t, dtype=np.float64)
    for i, (name, dev) in enumerate(deviations.items()):
        d = np.asarray(dev, dtype=np.float64)
        if d.shape != t.shape:
            raise ValueError(f"deviations[{name!r}] has shape {d.shape}, expected {t.shape}")
        ax.plot(t, d, "o-", ms=3.5, lw=1, color=f"C{i}", label=name)
    ax.axhspan(-band, band, color="0.85", zorder=0, label=rf"$\pm{band:g}\sigma$")
    ax.axhline(0, color="0.4", lw=0.8)
    _time_axis(ax, t)
    ax.set_ylabel(r"(learned $-$ exact) / $\sigma$")
    ax.legend(fontsize=8, ncol=2)
    return fig


# --- running couplings ------------------------------------------------------------------------
def plot_running_couplings(learned: Mapping[str, np.ndarray] | None, gaussian=None, ax=None, *,
                           names: Sequence[str] | None = None):
    """Running couplings c_i(t): learned (solid, from rgdist.flow.learned_couplings) and the
    Gaussian prediction (dashed, same colour; rgdist.flow.gaussian_couplings). Both are
    mappings with ``t`` and one (K,) array per operator name."""
    if learned is None and gaussian is None:
        raise ValueError("give learned and/or gaussian couplings")
    for label, data in (("learned", learned), ("gaussian", gaussian)):
        if data is not None and (not isinstance(data, Mapping) or "t" not in data):
            raise ValueError(f"{label} couplings must be a mapping with 't' and operator arrays")
    if names is None:  # the learned model's operators (else every operator of the prediction)
        source = learned if learned is not None else gaussian
        names = [k for k in COUPLING_LABELS if k in source]
    if not names:
        raise ValueError(f"no coupling to plot; operator names are {list(COUPLING_LABELS)}")
    fig, ax = _axes(ax)
    all_t = []
    for i, name in enumerate(names):
        color = f"C{i}"
        sym = COUPLING_LABELS.get(name, name)
        if learned is not None and name in learned:
            ax.plot(learned["t"], learned[name], "-", color=color, lw=1.5, label=f"{sym} learned")
            all_t.append(np.asarray(learned["t"]))
        if gaussian is not None and name in gaussian:
            ax.plot(gaussian["t"], gaussian[name], "--", color=color, lw=1,
                    label=f"{sym} Gaussian prediction")
            all_t.append(np.asarray(gaussian["t"]))
    _time_axis(ax, np.concatenate(all_t))
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylabel(r"running coupling $c_i(t)$ in $S_t = \sum_i c_i(t)\, O_i$")
    ax.legend(fontsize=8, ncol=2)
    return fig


# --- two-point function ---------------------------------------------------------------------
def plot_g2_flow(lattice, forward=None, learned=None, gaussian=None, t_indices=None, ax=None,
                 *, log: bool = True):
    """G2(p; t) vs phat^2 at selected flow times (one colour per t_k): forward (open circles),
    learned (crosses), Gaussian closed form (dashed line). ``t_indices``: indices into the
    flows' common t grid (default: first, middle and last)."""
    results = [(r, lab) for r, lab in ((forward, "forward"), (learned, "learned"), (gaussian, "gaussian"))
               if r is not None]
    if not results:
        raise ValueError("give at least one of forward, learned, gaussian")
    for res, label in results:
        _check_result(res, "g2", label)
        if tuple(np.shape(res.values["g2"])[1:]) != tuple(lattice.shape):
            raise ValueError(f"{label} g2 does not match the lattice shape {lattice.shape}")
    t = np.asarray(results[0][0].t)
    if t_indices is None:
        t_indices = sorted({0, t.size // 2, t.size - 1})
    t_indices = [int(i) for i in np.atleast_1d(t_indices)]
    bad = [i for i in t_indices if not -t.size <= i < t.size]
    if bad:
        raise ValueError(f"t_indices must lie in [0, {t.size}), got {bad}")
    x = lattice.phat2().cpu().numpy().reshape(-1)
    order = np.argsort(x, kind="stable")
    fig, ax = _axes(ax)
    for j, k in enumerate(t_indices):
        color = f"C{j}"
        tk = t[k]
        if forward is not None:
            v, e = (np.asarray(a)[k].reshape(-1) for a in forward["g2"])
            ax.errorbar(x, v, yerr=e, fmt="o", mfc="none", ms=4, color=color, lw=0.8,
                        label=f"exact, t = {tk:.3g}")
        if learned is not None:
            v, e = (np.asarray(a)[k].reshape(-1) for a in learned["g2"])
            ax.errorbar(x, v, yerr=e, fmt="x", ms=4, color=color, lw=0.8,
                        label=f"learned, t = {tk:.3g}")
        if gaussian is not None:
            v = np.asarray(gaussian["g2"][0])[k].reshape(-1)
            ax.plot(x[order], v[order], "--", color=color, lw=0.9,
                    label=f"Gaussian, t = {tk:.3g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(r"$\hat p^2 = \sum_\mu 4 \sin^2(p_\mu/2)$ (lattice units)")
    ax.set_ylabel(r"$G_2(p; t) = \langle |\tilde\phi_t(p)|^2 \rangle / V$")
    ax.legend(fontsize=7, ncol=2)
    return fig
