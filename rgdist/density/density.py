"""Model log-densities of the probability-flow sampler (the proposal density of exact MH).

Along a solution of the probability-flow ODE, d/dt log p_t(phi_t) = -div f, hence

    log p_{t_min}(phi_{t_min}) = log p_T(phi_T) + int_{t_min}^{T} div f(phi_t, t) dt,

with p_T the Gaussian prior (rgdist.density.prior). Three ways to get the log-density
(``method``, names from rgdist.catalog.DENSITY_METHODS):

* ``"discrete"``: EXACT density of the discrete map actually run. Each step
  x -> y = Phi_k(x) is a deterministic map, so log q(y) = log q(x) - log|det dPhi_k/dx|; the
  Jacobian of the whole step (both score calls of a Heun step) is formed by V batched
  vector-Jacobian products and its log|det| taken by LU. Independence Metropolis-Hastings
  with this density is exact for the sampler run (any step count). For configurations not
  produced by the sampler (:func:`ode_log_likelihood`) each step is inverted by Newton's
  method first.
* ``"trace"``: the continuous-time formula with the exact divergence tr(df/dphi) (the same
  V vector-Jacobian products, diagonal only, or a model's closed form) integrated along the
  path (trapezoid rule on the Heun path, i.e. Heun on the augmented ODE, or RK4). Accurate to
  O(h^2) (O(h^4) with RK4); not the exact density of the discrete map, so MH with it carries
  that bias. (Formerly called "exact"; that name now raises ValueError.)
* ``"hutchinson"``: div f estimated by v^T (df/dphi) v with ``n_probes`` Rademacher or
  Gaussian probes per evaluation (unbiased); the estimator's variance (sum over evaluations
  of (weight)^2 * sample variance / n_probes) is reported. Any volume.

Volume limits (rgdist.catalog.volume_limit): "discrete" and "trace" need
V = prod(N) <= MAX_EXACT_VOLUME = 256 (N <= 16 in 2D) for a generic network; a structured
model (closed-form Jacobian) has "trace" at any V and "discrete" up to
MAX_STRUCTURED_VOLUME = 1024; an exact-trace model has "trace" at any V. Larger lattices
raise ValueError pointing to ``method="hutchinson"``. Cost per configuration and Heun step:
2 score evaluations plus 2 V (trace, discrete) or 2 n_probes (hutchinson) vector-Jacobian
products.
"""
from __future__ import annotations

import math

import torch

from rgdist.catalog import DENSITY_METHODS, DISCRETE_ONLY, INTEGRATORS, PROBES, volume_limit
from rgdist.density.divergence import Divergence, batched_jacobian, slogdet
from rgdist.density.field import FlowField
from rgdist.density.prior import ScoreFn, gaussian_log_density, prior_log_density, prior_spectrum
from rgdist.density.steps import (
    SplitFlow,
    augmented_heun_step,
    discrete_step,
    exponential_step,
    implicit_step,
    invert_step,
    rk4_step,
)
from rgdist.lattice.geometry import Lattice
from rgdist.rg.schemes import Scheme


def _check_args(scheme, method, n_probes, probe, generator_needed, generator,
                integrator="heun"):
    if not isinstance(scheme, Scheme):
        raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
    if method == "exact":
        raise ValueError("method 'exact' is now called 'trace' (the continuous-time density with "
                         "the exact divergence tr(df/dphi)): pass method='trace'")
    if method not in DENSITY_METHODS:
        raise ValueError(f"method must be one of {DENSITY_METHODS}, got {method!r}")
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    if integrator in DISCRETE_ONLY and method != "discrete":
        raise ValueError(f"integrator={integrator!r} has only the exact density of its discrete "
                         f"map: use method='discrete' (got method={method!r}), or "
                         "integrator='heun' or 'rk4' for the continuous-time methods")
    if integrator == "split" and method == "hutchinson":
        raise ValueError("integrator='split' (linear part exact, channels by RK4) has the "
                         "exact-trace density (method='trace') or the exact density of its "
                         "discrete map (method='discrete', V <= 256); got method='hutchinson'")
    if integrator == "rk4" and method == "discrete":
        raise ValueError("integrator='rk4' integrates the continuous-time density (method "
                         "'trace' or 'hutchinson'); method='discrete' needs integrator 'heun', "
                         "'exponential' or 'implicit'")
    if isinstance(n_probes, bool) or not hasattr(n_probes, "__index__") or int(n_probes) < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if generator_needed and not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (the prior and Hutchinson probes "
                         f"draw from it), got {type(generator).__name__}")
    return int(n_probes)


def _check_batch_size(batch_size, n: int) -> int:
    if batch_size is None:
        return n
    if isinstance(batch_size, bool) or not hasattr(batch_size, "__index__") or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    return int(batch_size)


def _step_evaluations(integrator: str, s: float) -> int:
    """Remainder evaluations (hence Jacobians) of one discrete step ending at s."""
    return 1 if integrator == "exponential" or s == 0.0 else 2


def _check_volume(lattice: Lattice, method: str, structured: bool = False,
                  traced: bool = False) -> None:
    """The volume limit of rgdist.catalog.volume_limit: a generic network's Jacobian costs V
    vector-Jacobian products per evaluation (V <= MAX_EXACT_VOLUME for "trace" and
    "discrete"); a structured Jacobian (closed form) has an O(V) exact trace (any V) and a
    dense V x V determinant for "discrete" (V <= MAX_STRUCTURED_VOLUME); an exact-trace model
    (``traced``) has an exact O(V K) trace (any V for "trace") but its full Jacobian
    ("discrete") is autograd's."""
    V = lattice.volume
    limit = volume_limit(method, structured, traced)
    if limit is None or V <= limit:
        return
    if structured:
        raise ValueError(
            f"method='discrete' takes the determinant of a dense V x V step Jacobian and is "
            f"allowed for V <= {limit}; this lattice has V = {V} ({lattice.shape}): use "
            "method=\"trace\" (closed-form divergence, any V) or method=\"hutchinson\"")
    raise ValueError(
        f"method={method!r} forms the full V x V Jacobian and is allowed only for volume "
        f"V <= {limit} (N <= 16 in 2D); this lattice has V = {V} "
        f"({lattice.shape}): use method=\"hutchinson\" (stochastic trace estimator) instead")


def flow_with_logq(score_fn: ScoreFn, scheme: Scheme, phi_T: torch.Tensor, times, *,
                   integrator: str = "rk4", checkpoint: bool = False):
    """Differentiable probability-flow path with the EXACT divergence (for training).

    Integrates phi_T (B, *shape) down the decreasing grid ``times`` with ``integrator``
    ("rk4" or "heun"); returns (phi, delta) with delta = int div f dt along the path, so
    log q(phi) = log p_T(phi_T) + delta. The score must have an O(V) exact trace (a
    rgdist.models.TraceScore, alone or inside GaussianExactScore, or a structured model);
    gradients flow to its parameters. ``checkpoint=True`` recomputes each step in the
    backward pass (torch.utils.checkpoint): memory O(one step) instead of O(steps).
    """
    if integrator not in ("rk4", "heun", "split"):
        raise ValueError(f"integrator must be 'rk4', 'heun' or 'split', got {integrator!r}")
    flow = FlowField(score_fn, scheme)
    if flow.rem is not None and flow.rem_trace is None:
        raise ValueError("flow_with_logq needs a score model with an exact trace (model "
                         "'trace', alone or with gaussian_exact); this model has none")
    div = Divergence(flow, "trace", 1, "rademacher", None, 8192)
    split = SplitFlow(flow, score_fn) if integrator == "split" else None
    grid = [float(x) for x in torch.as_tensor(times, dtype=torch.float64).tolist()]

    def step(x, a, b):
        if split is not None:
            return split.step(x, a, b)
        if integrator == "rk4":
            y, dl, _ = rk4_step(div, x, a, b)
            return y, dl
        # (Heun on every step, also on one that ends at t = 0: the path as trained)
        y, dl, _ = augmented_heun_step(div, x, a, b, euler_to_zero=False)
        return y, dl

    phi = phi_T
    delta = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
    for a, b in zip(grid[:-1], grid[1:]):
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as ckpt
            phi, dl = ckpt(step, phi, a, b, use_reentrant=False)
        else:
            phi, dl = step(phi, a, b)
        delta = delta + dl
    return phi, delta


def _sample_chunk(flow: FlowField, div: Divergence, phi, grid, method, integrator="heun"):
    """Integrate T -> t_min from phi (= phi_T); returns (phi, log-density change, var, #folds)."""
    delta = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
    var = torch.zeros_like(delta)
    n_bad = 0
    if integrator == "split":
        split = SplitFlow(flow, flow.score_fn)
        for t, s in zip(grid[:-1], grid[1:]):
            if method == "discrete":  # exact density of the map run: its full Jacobian
                y, J = batched_jacobian(lambda z: split.step(z, t, s)[0], phi,
                                        max_rows=div.max_rows)
                sign, logabs = slogdet(J)
                div.vjp += phi[0].numel()
                n_bad += int((sign <= 0).sum())
                phi, delta = y, delta - logabs.to(torch.float64)
                continue
            with torch.no_grad():
                phi, dl = split.step(phi, t, s)
            delta = delta + dl
        return phi.detach(), delta.detach(), var, n_bad
    if integrator == "rk4":
        with torch.no_grad():  # (Hutchinson probes enable grad for their own products)
            for t, s in zip(grid[:-1], grid[1:]):
                phi, dl, dv = rk4_step(div, phi, t, s)
                delta, var = delta + dl, var + dv
        return phi.detach(), delta.detach(), var.detach(), 0
    step = {"exponential": exponential_step, "implicit": implicit_step}.get(integrator,
                                                                           discrete_step)
    for t, s in zip(grid[:-1], grid[1:]):
        if method == "discrete":
            j0 = flow.jacobians
            phi, _, logabs, sign = step(flow, phi, t, s, div.max_rows)
            if integrator == "implicit":
                div.vjp += phi[0].numel() * (flow.jacobians - j0)
            elif not flow.structured:
                div.vjp += phi[0].numel() * _step_evaluations(integrator, s)
            n_bad += int((sign <= 0).sum())
            delta = delta - logabs.to(torch.float64)
            continue
        phi, dl, dv = augmented_heun_step(div, phi, t, s)
        delta, var = delta + dl, var + dv
    return phi, delta, var, n_bad


def ode_sample_with_logq(score_fn: ScoreFn, scheme: Scheme, n: int, *, n_steps: int,
                         generator: torch.Generator, method: str = "trace", n_probes: int = 1,
                         t_min: float | None = None, grid: str = "uniform", prior_G=None,
                         probe: str = "rademacher", batch_size: int | None = None,
                         max_rows: int = 8192, dtype=torch.float64, return_info: bool = False,
                         integrator: str = "heun"):
    """Draw ``n`` configurations with the probability-flow sampler AND their log-density.

    phi_T ~ N(0, S_T) (S_T = scheme.prior_spectrum(prior_G), drawn with ``generator`` on its
    device), then n_steps Heun steps on scheme.time_grid(n_steps, grid, t_min) down to t_min
    (no final denoising). log_q = log p_T(phi_T) + (log-density change by ``method``, see the
    module docstring); with method="discrete" it is the exact density of the returned phi
    under this sampler. A :class:`GaussianScore` or GaussianExactScore built on ``scheme``
    has its Gaussian part treated in closed form (only the remainder is differentiated).
    ``batch_size`` splits the work (the draws then depend on it).

    Returns ``(phi, log_q)``; with ``return_info=True`` also a dict: ``log_q_var`` (B,)
    (Hutchinson estimator variance; 0 otherwise; nan with n_probes = 1), ``log_prior`` (B,),
    ``phi_T``, ``nfe`` (score or remainder evaluations per configuration), ``vjp``
    (vector-Jacobian products per configuration), ``n_nonpositive_det`` (discrete steps whose
    Jacobian determinant was <= 0, i.e. the map folded; 0 for a good sampler), ``times``.
    """
    n_probes = _check_args(scheme, method, n_probes, probe, True, generator, integrator)
    if isinstance(n, bool) or not hasattr(n, "__index__") or int(n) < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    batch_size = _check_batch_size(batch_size, n)
    grid_t = scheme.time_grid(n_steps, kind=grid, t_min=t_min).tolist()
    lat = scheme.lattice
    spec = prior_spectrum(scheme, prior_G, generator.device)
    flow = FlowField(score_fn, scheme)
    _check_volume(lat, method, flow.structured, flow.rem_trace is not None)
    div = Divergence(flow, method, n_probes, probe, generator, max_rows)
    outs: dict[str, list] = {"phi": [], "log_q": [], "var": [], "prior": [], "phi_T": []}
    n_bad, n_chunks = 0, 0
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        phi_T = lat.colored_noise(spec, size, generator).to(dtype)
        log_p = gaussian_log_density(phi_T, spec, lat).to(torch.float64)
        phi, delta, var, bad = _sample_chunk(flow, div, phi_T, grid_t, method, integrator)
        n_bad += bad
        n_chunks += 1
        for key, val in (("phi", phi), ("log_q", log_p + delta), ("var", var),
                         ("prior", log_p), ("phi_T", phi_T)):
            outs[key].append(val.detach())
    phi, log_q = torch.cat(outs["phi"]), torch.cat(outs["log_q"])
    if not return_info:
        return phi, log_q
    info = {"log_q_var": torch.cat(outs["var"]), "log_prior": torch.cat(outs["prior"]),
            "phi_T": torch.cat(outs["phi_T"]), "nfe": flow.nfe // n_chunks,
            "vjp": div.vjp // n_chunks, "n_nonpositive_det": n_bad,
            "times": torch.tensor(grid_t, dtype=torch.float64), "method": method,
            "integrator": integrator}
    return phi, log_q, info


def ode_log_likelihood(score_fn: ScoreFn, scheme: Scheme, phi0: torch.Tensor, *, n_steps: int,
                       method: str = "trace", n_probes: int = 1, t_min: float | None = None,
                       grid: str = "uniform", prior_G=None, probe: str = "rademacher",
                       generator: torch.Generator | None = None, max_rows: int = 8192,
                       newton_tol: float = 1e-11, newton_max_iter: int = 30,
                       return_info: bool = False, integrator: str = "heun"):
    """Model log-density at t_min of given configurations ``phi0`` (B, *lattice.shape).

    trace / hutchinson: integrate the probability-flow ODE forward, t_min -> T, with Heun on
    the reversed grid; log q(phi0) = log p_T(phi_T) + int_{t_min}^T div f dt (trapezoid rule
    along the Heun path). discrete: invert each reverse Heun step (Newton; exactly for a
    linear flow) and sum -log|det| of the step Jacobians: the exact density of the sampler
    of :func:`ode_sample_with_logq` with the same grid (the map must be invertible).
    ``generator`` is needed only for Hutchinson probes. Returns log_q (B,) or, with
    ``return_info``, (log_q, info): ``log_q_var``, ``phi_T``, ``log_prior``, ``nfe``,
    ``vjp`` (per configuration) and ``newton_iterations`` (the most any step needed).
    """
    n_probes = _check_args(scheme, method, n_probes, probe, method == "hutchinson", generator,
                           integrator)
    lat = scheme.lattice
    lat.check_field(phi0, "phi0")
    grid_t = scheme.time_grid(n_steps, kind=grid, t_min=t_min).tolist()
    flow = FlowField(score_fn, scheme)
    _check_volume(lat, method, flow.structured, flow.rem_trace is not None)
    div = Divergence(flow, method, n_probes, probe, generator, max_rows)
    phi = phi0.detach()
    delta = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
    var = torch.zeros_like(delta)
    iters = 0
    if method == "discrete":
        for t, s in zip(reversed(grid_t[:-1]), reversed(grid_t[1:])):
            j0 = flow.jacobians
            phi, logabs, it = invert_step(flow, phi, t, s, max_rows, newton_tol, newton_max_iter,
                                          integrator)
            iters = max(iters, it)
            if integrator == "implicit":
                div.vjp += phi[0].numel() * (flow.jacobians - j0)
            elif not flow.structured:
                div.vjp += it * phi[0].numel() * _step_evaluations(integrator, s)
            delta = delta - logabs.to(torch.float64)
    elif integrator == "rk4":
        up = list(reversed(grid_t))
        with torch.no_grad():
            for t, u in zip(up[:-1], up[1:]):
                phi, dl, dv = rk4_step(div, phi, t, u)
                delta, var = delta + dl, var + dv
    else:
        up = list(reversed(grid_t))
        for t, u in zip(up[:-1], up[1:]):
            phi, dl, dv = augmented_heun_step(div, phi, t, u)
            delta, var = delta + dl, var + dv
    # a configuration whose preimage overflowed (the inverse of a confining flow grows
    # super-exponentially far out) has a prior density that underflows: q = 0 to float range
    lost = ~torch.isfinite(phi).flatten(1).all(1)
    log_prior = prior_log_density(scheme, torch.where(lost.view(-1, *(1,) * lat.d), 0.0, phi),
                                  prior_G).to(torch.float64)
    lost = lost | (log_prior == -math.inf)  # |log|det|| grows only like log |phi|
    log_prior = torch.where(lost, -math.inf, log_prior)
    log_q = torch.where(lost, -math.inf, log_prior + delta)
    if not return_info:
        return log_q
    return log_q, {"log_q_var": var, "phi_T": phi, "log_prior": log_prior, "nfe": flow.nfe,
                   "vjp": div.vjp, "newton_iterations": iters, "method": method,
                   "integrator": integrator}
