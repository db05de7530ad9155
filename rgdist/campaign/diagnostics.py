"""Checks that a campaign's scheme and sampler cannot silently mislead (bad input: exit 2).

Three numbers per grid point, from the data spectrum G (G2 units):

* **leftover** ``Scheme.leftover(G)``: A_T^2 G / Sigma_T, the data signal left at the final
  time over the noise, max and mean over the noised modes. The prior is the Gaussian of
  spectrum Sigma_T + A_T^2 G; a mode with a large leftover is still mostly data at T, and
  its non-Gaussian law (the broken phase's double peak) is replaced by a Gaussian that the
  reverse process has no reason to repair. Limit ``scheme.max_leftover`` (default 0.1, see
  rgdist.catalog.MAX_LEFTOVER).
* **dynamic range** of the prior spectrum over the noised modes: the score of the most
  collapsed mode is computed from position-space fields whose rounding is eps times the
  largest mode, a relative error eps sqrt(range). Beyond 1/eps^2 of ``model.dtype``
  (2.0e31 in float64, 7.0e13 in float32) it is pure rounding and the sampler returns inf /
  NaN (Polchinski at T = 3: 1e82). Refused always.
* **sampler bias** (rgdist.sample.audit): the relative G2 deviation the solver, its grid and
  step count give on Gaussian data of spectrum G with the exact score, in closed form.
  Limit ``sample.max_bias`` ("auto": 0.5 / sqrt(sample.n_samples)).

When each is checked:

* ``rgdist validate`` / ``rgdist run`` (before anything is written), :func:`precheck`: the
  dynamic range of Sigma_T (which the data can only widen: A_T^2 G adds mostly to the large
  low modes) for every lattice size; leftover and bias exactly for the points with lam = 0,
  whose data spectrum is the free propagator 1/(phat^2 + m2). For lam > 0 ``validate``
  prints free-field *estimates* (G = 1/(phat^2 + |m2|), lam ignored; labelled as such) and
  the largest zero-mode spectrum G(0) = V <M^2> that the leftover limit tolerates.
* ``rgdist run``, at the start of each point's training (its HMC data exists, its spectrum
  is measured), :func:`point_diagnostics`: all three, on the measured spectrum. A failure
  raises ConfigError (exit code 2, one ``error:`` line naming the key to change). The run
  directory stays valid: the point's checkpoint at the train stage (HMC done) is kept, its
  status file records the error, no results file is written, and ``rgdist resume`` repeats
  the (deterministic) check. Fix the campaign file and run it in a new run directory.
  The three numbers are stored with the results (``leftover/...``, ``sampler_bias/...``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rgdist.errors import ConfigError

ROUNDING_RANGE = {"float64": 1.0 / torch.finfo(torch.float64).eps ** 2,
                  "float32": 1.0 / torch.finfo(torch.float32).eps ** 2}

# what to change when the leftover is too large: (key path of the error, advice)
_LEFTOVER_FIX = {
    "carosso": ("scheme.T", "raise scheme.T or scheme.mu2 (A_T = exp(-(phat^2 + mu2) T); the IR "
                            "mass mu2 noises the lowest modes)"),
    "polchinski": ("scheme.mu2", "raise scheme.mu2 (the IR mass noises the lowest modes and "
                                 "hardly changes the prior's dynamic range) rather than scheme.T "
                                 "(which widens that range fast)"),
    "renormalized_polchinski": ("scheme.mu2", "raise scheme.mu2 (the IR mass noises the lowest "
                                              "modes) or scheme.T"),
    "vp": ("scheme.T", "raise scheme.T or scheme.beta_max"),
    "ve": ("scheme.sigma_max", "raise scheme.sigma_max (sigma_max^2 must dominate the data "
                               "spectrum; scheme.T does not help: A_T = 1)"),
}
_RANGE_FIX = {
    "polchinski": "lower scheme.T or raise scheme.Lambda0 (the range grows like "
                  "exp(4d e^(2T) / Lambda0^2); scheme.mu2 does not narrow it)",
}


def _grid_times(campaign, scheme, n_steps, grid):
    """The solver grid of the sample stage (flow times inserted, as rgdist.campaign.point)."""
    from rgdist.flow.learned import merged_grid

    t_flow = np.asarray(sorted(campaign.measure.record_times), dtype=np.float64)
    if len(t_flow):
        return merged_grid(scheme, t_flow, n_steps, grid, campaign.scheme.t_min)
    return scheme.time_grid(n_steps, kind=grid, t_min=campaign.scheme.t_min)


def build(campaign, shape):
    from rgdist.lattice import Lattice
    from rgdist.rg import build_scheme

    return build_scheme(campaign.scheme.name, Lattice(tuple(shape)), **campaign.scheme.params)


def range_limit(campaign) -> float:
    return ROUNDING_RANGE[campaign.model.dtype]


def noise_range(scheme) -> float:
    """max/min of Sigma_T over the noised modes (the data-independent part of the range)."""
    sig = scheme.Sigma(scheme.T)[~scheme.frozen_modes()]
    return float(sig.max() / sig.min())


def _fmt_shape(shape) -> str:
    return "x".join(str(n) for n in shape)


# ---- the three checks ------------------------------------------------------------------------
def check_range(campaign, dynamic_range: float, where: str, what: str = "prior spectrum") -> None:
    limit = range_limit(campaign)
    if not dynamic_range <= limit:
        fix = _RANGE_FIX.get(campaign.scheme.name, "lower scheme.T")
        raise ConfigError("scheme.T", f"the {what} at T spans a dynamic range of "
                                      f"{dynamic_range:.2g} over the noised modes {where} "
                                      f"(leftover(G)['dynamic_range']), beyond 1/eps^2 = "
                                      f"{limit:.2g} of model.dtype {campaign.model.dtype}: the "
                                      f"score of the collapsed modes is pure rounding and the "
                                      f"sampler returns inf/NaN (more sample.n_steps cannot "
                                      f"help); {fix}")


def check_leftover(campaign, lo: dict, where: str) -> None:
    limit = campaign.scheme.max_leftover
    if limit is None or lo["max"] <= limit:
        return
    path, fix = _LEFTOVER_FIX[campaign.scheme.name]
    raise ConfigError(path, f"the data signal left at the final time, A_T^2 G / Sigma_T, reaches "
                            f"{lo['max']:.3g} (mean {lo['mean']:.3g} over the noised modes; limit "
                            f"scheme.max_leftover = {limit:g}) {where}, so the Gaussian prior "
                            f"would stand in for a low-momentum law that is still mostly the "
                            f"data's: {fix}; or set scheme.max_leftover higher (null: report only)")


def _describe(solver, grid, n_steps):
    return f"{solver} on the {grid} grid with {n_steps} steps"


def _bias_of(campaign, scheme, G, solver, grid, n_steps) -> dict:
    from rgdist.sample.audit import sampler_bias

    times = _grid_times(campaign, scheme, n_steps, grid)
    return sampler_bias(scheme, times, G, solver, denoise=campaign.sample.denoise)


def suggest(campaign, scheme, G, limit: float) -> str:
    """The cheapest (fewest steps) grid / step count of the same solver that passes."""
    s = campaign.sample
    grids = (s.grid,) + tuple(g for g in ("uniform", "log", "snr") if g != s.grid)
    for factor in (1, 2, 4, 8, 16):
        n = s.n_steps * factor
        for grid in grids:
            if factor == 1 and grid == s.grid:
                continue
            try:
                b = _bias_of(campaign, scheme, G, s.solver, grid, n)
            except ValueError:
                continue
            if b["max_discretization"] <= limit:
                keys = ([f"sample.grid: {grid}"] if grid != s.grid else []) + (
                    [f"sample.n_steps: {n}"] if factor > 1 else [])
                return f"{', '.join(keys)} (bias {100 * b['max_discretization']:.2g}%)"
    return ""


def check_bias(campaign, scheme, G, where: str) -> dict:
    s = campaign.sample
    b = _bias_of(campaign, scheme, G, s.solver, s.grid, s.n_steps)
    limit = s.bias_limit
    if limit is None or b["max_discretization"] <= limit:
        return b
    alt = suggest(campaign, scheme, G, limit)
    options = [alt] if alt else []
    if s.solver != "exponential":
        options.append("sample.solver: exponential (exact for the Gaussian part at any step count)")
    lim = (f"{limit:.3g} = 0.5/sqrt(sample.n_samples)" if s.max_bias == "auto" else f"{limit:g}")
    size = b["max_discretization"]
    size = "without bound (unstable)" if not math.isfinite(size) else f"{100 * size:.3g}%"
    raise ConfigError("sample.solver", f"{_describe(s.solver, s.grid, s.n_steps)} changes G2 by up "
                                       f"to {size} on Gaussian data of the spectrum {where} with "
                                       f"the exact score (closed form, rgdist.sample.audit; "
                                       f"limit sample.max_bias = {lim}); use "
                                       f"{' or '.join(options) or 'another sample.solver'}, or set "
                                       f"sample.max_bias: null to accept it")


# ---- per point, on the measured spectrum ------------------------------------------------------
def point_where(point, what="measured on its HMC data") -> str:
    return (f"at point {point.point_id} ({_fmt_shape(point.shape)}, m2 = {point.m2:g}, "
            f"lam = {point.lam:g}; G {what})")


def point_diagnostics(campaign, scheme, G, where: str, check: bool = True) -> dict:
    """{results key: array} of the leftover, dynamic range and sampler bias for spectrum G;
    with ``check`` a ConfigError when one exceeds its limit (range, leftover, bias in turn)."""
    G = torch.as_tensor(G, dtype=torch.float64).cpu()
    lo = scheme.leftover(G)
    if check:
        check_range(campaign, lo["dynamic_range"], where)
        check_leftover(campaign, lo, where)
    if check:
        b = check_bias(campaign, scheme, G, where)
    else:
        s = campaign.sample
        b = _bias_of(campaign, scheme, G, s.solver, s.grid, s.n_steps)
    limit = campaign.sample.bias_limit
    lo_limit = campaign.scheme.max_leftover
    return {
        "leftover/ratio": lo["ratio"].numpy(),
        "leftover/max": np.asarray(lo["max"], dtype=np.float64),
        "leftover/mean": np.asarray(lo["mean"], dtype=np.float64),
        "leftover/dynamic_range": np.asarray(lo["dynamic_range"], dtype=np.float64),
        "leftover/n_frozen": np.asarray(lo["n_frozen"], dtype=np.int64),
        "leftover/limit": np.asarray(math.nan if lo_limit is None else lo_limit, dtype=np.float64),
        "sampler_bias/discretization": b["discretization"].numpy(),
        "sampler_bias/max_discretization": np.asarray(b["max_discretization"], dtype=np.float64),
        "sampler_bias/max_total": np.asarray(b["max_total"], dtype=np.float64),
        "sampler_bias/mean_total": np.asarray(b["mean_total"], dtype=np.float64),
        "sampler_bias/limit": np.asarray(math.nan if limit is None else limit, dtype=np.float64),
    }


def nonfinite_message(campaign, scheme, G, solver: str, chunk: int) -> str:
    """Why the sampler produced inf/NaN: the dynamic range when that is the cause."""
    lo = scheme.leftover(torch.as_tensor(G, dtype=torch.float64).cpu())
    dr, limit = lo["dynamic_range"], range_limit(campaign)
    eps = torch.finfo(getattr(torch, campaign.model.dtype)).eps
    if eps * math.sqrt(dr) > 1e-3:  # the collapsed modes' score has > 0.1% rounding error
        fix = _RANGE_FIX.get(campaign.scheme.name, "lower scheme.T")
        return (f"the {solver} sampler produced non-finite fields (chunk {chunk}): the prior "
                f"spectrum spans a dynamic range of {dr:.2g} (leftover(G)['dynamic_range']; "
                f"rounding limit 1/eps^2 = {limit:.2g} for model.dtype {campaign.model.dtype}), "
                f"so the collapsed modes' score is mostly rounding; {fix}")
    return (f"the {solver} sampler produced non-finite fields (chunk {chunk}) although the prior's "
            f"dynamic range {dr:.2g} is far from the rounding limit {limit:.2g}: the learned score "
            f"is at fault; train longer (train.steps), or use sample.solver: exponential, "
            f"another sample.grid or more sample.n_steps")


# ---- before anything is written ---------------------------------------------------------------
def _free_G(lattice, m2: float):
    """1/(phat^2 + m^2) with m^2 = |m2| (the lowest non-zero phat^2 when m2 = 0)."""
    p = lattice.phat2()
    mass2 = abs(m2) if m2 != 0 else float(p[p > 0].min())
    return 1.0 / (p + mass2)


def precheck(campaign) -> list[str]:
    """Binding checks that need no data (ConfigError), and the report lines of ``validate``."""
    limit_lo = campaign.scheme.max_leftover
    limit_b = campaign.sample.bias_limit
    s = campaign.sample
    lines = [f"  diagnostics (checked by `run` on each point's measured spectrum; the estimates "
             f"below are not binding)"]
    by_shape: dict = {}
    for p in campaign.points():
        by_shape.setdefault(tuple(p.shape), []).append(p)
    for shape, points in by_shape.items():
        scheme = build(campaign, shape)
        lat = scheme.lattice
        label = _fmt_shape(shape)
        dr = noise_range(scheme)
        check_range(campaign, dr, f"of lattice {label}", what="noise spectrum Sigma_T")
        for p in points:  # lam = 0: the free propagator is the data spectrum itself
            if p.lam == 0:
                where = point_where(p, "= the free propagator 1/(phat^2 + m2), exact at lam = 0")
                point_diagnostics(campaign, scheme, lat.free_propagator(p.m2), where)
        interacting = [p for p in points if p.lam != 0]
        exact_note = " (lam = 0 points checked exactly: passed)" if len(interacting) < len(points) else ""
        lines.append(f"    {label:<8} dynamic range of Sigma_T {dr:.3g} (limit {range_limit(campaign):.2g}, "
                     f"model.dtype {campaign.model.dtype}){exact_note}")
        if not interacting:
            continue
        m2s = sorted({abs(p.m2) for p in interacting})
        est = [(m, scheme.leftover(_free_G(lat, m)), _bias_of(campaign, scheme, _free_G(lat, m),
                                                                s.solver, s.grid, s.n_steps))
               for m in {m2s[0], m2s[-1]}]
        lo_max = max(e[1]["max"] for e in est)
        b_max = max(e[2]["max_discretization"] for e in est)
        A2 = scheme.A(scheme.T) ** 2
        sig = scheme.Sigma(scheme.T)
        frozen = scheme.frozen_modes()
        bounds = []
        if limit_lo is not None:
            flat = lat.phat2().reshape(-1)
            idx0 = 0
            idx1 = int(torch.nonzero(flat == flat[flat > 0].min())[0])
            for name, i in (("G(0) = V <M^2>", idx0), ("G(p1)", idx1)):
                if bool(frozen.reshape(-1)[i]):
                    bounds.append(f"{name.split(' ')[0]}: frozen (drawn from the data)")
                    continue
                g = float(limit_lo * sig.reshape(-1)[i] / A2.reshape(-1)[i])
                extra = f" (<M^2> <= {g / lat.volume:.3g})" if i == 0 else ""
                bounds.append(f"{name} <= {g:.3g}{extra}")
        flag = lambda bad: "  -- over the limit: `run` stops after HMC if the measured spectrum confirms" if bad else ""
        lim_txt = "null: report only" if limit_lo is None else f"{limit_lo:g}"
        lines.append(f"             leftover A_T^2 G/Sigma_T, free-field estimate (G = 1/(phat^2 + |m2|), "
                     f"lam ignored): max {lo_max:.3g}; limit scheme.max_leftover = {lim_txt}"
                     + (f", met while {' and '.join(bounds)}" if bounds else "")
                     + flag(limit_lo is not None and lo_max > limit_lo))
        blim = "null: report only" if limit_b is None else f"{limit_b:.3g}"
        size = "unstable" if not math.isfinite(b_max) else f"{b_max:.3g}"
        lines.append(f"             sampler bias of {_describe(s.solver, s.grid, s.n_steps)}, "
                     f"free-field estimate: max |dG2/G2| {size}; limit sample.max_bias = {blim}"
                     + flag(limit_b is not None and not b_max <= limit_b))
    return lines
