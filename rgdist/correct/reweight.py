"""Self-normalized importance reweighting of proposal samples to the phi^4 target.

For samples phi_i ~ q with known log q, the target p ~ exp(-S) has weights

    log w_i = -S[phi_i] - log q(phi_i),      <O>_p = sum_i w_i O_i / sum_i w_i,

unbiased as n -> infinity (bias O(1/n)); the unknown normalizations of p and q cancel.
Effective sample size (Kish):  ESS/n = (sum w)^2 / (n sum w^2)  in (0, 1].

Errors: delete-one-bin jackknife over bins of independent samples. Per bin b the
accumulator keeps sum_i w_i, sum_i w_i^2 and sum_i w_i O_i for O in {M, |M|, M^2, M^4,
max|phi|, G2(p)}; in EVERY replica the weights are renormalized by that replica's own
sum w (ratio of sums) and every derived quantity (chi, U, xi2, ...) is recomputed, so the
errors include the fluctuations of the normalization. Weights are stored as
exp(log w - ref) with ref the largest log w seen so far (sums are rescaled when it grows),
which keeps them finite for any magnitude of S + log q; ratios do not depend on ref.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rgdist.lattice.action import Phi4Action
from rgdist.lattice.geometry import Lattice
from rgdist.measure import observables as obs
from rgdist.measure.stats import jackknife

_SCALARS = ("w", "w2", "w_m", "w_abs_m", "w_m2", "w_m4", "w_max_abs")


def log_weights(phi: torch.Tensor, log_q: torch.Tensor, action: Phi4Action) -> torch.Tensor:
    """log w = -S[phi] - log q (float64, shape (B,)).

    A configuration with non-finite fields or S = +inf, or with log q = +inf, gets w = 0
    (log w = -inf). A finite configuration whose log q is nan or -inf is a failure of the
    proposal's density (the draw exists, so q > 0 there): ValueError, because dropping such
    draws silently would bias every corrected estimate.
    """
    S = action(phi).to(torch.float64)
    lq = torch.as_tensor(log_q).to(phi.device, torch.float64)
    field_ok = torch.isfinite(phi).flatten(1).all(1) & torch.isfinite(S)
    broken = field_ok & (torch.isnan(lq) | (lq == -math.inf))
    if bool(broken.any()):
        raise ValueError(f"log q is nan or -inf for {int(broken.sum())} of {lq.numel()} "
                         "configurations with finite fields: the proposal density failed there")
    lw = -S - lq
    return torch.where(field_ok & torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))


def normalized_weights(log_w: torch.Tensor) -> torch.Tensor:
    """w_i / sum_j w_j (a softmax of log w)."""
    return torch.softmax(torch.as_tensor(log_w, dtype=torch.float64), dim=0)


def ess_fraction(log_w: torch.Tensor) -> float:
    """ESS/n = (sum w)^2 / (n sum w^2), computed with log-sum-exp."""
    lw = torch.as_tensor(log_w, dtype=torch.float64).reshape(-1)
    if lw.numel() == 0 or not bool((lw > -math.inf).any()):
        raise ValueError("log_w must contain at least one finite log-weight")
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / lw.numel())


def pareto_k(log_w) -> float:
    """Tail shape k of the importance weights: a generalized Pareto fit to the largest
    M = min(n/5, 3 sqrt n) weights (profile-likelihood estimator of Zhang & Stephens 2009,
    with the weak prior toward k = 0.5 of 10 pseudo-observations used in Pareto-smoothed IS).

    Reading (Vehtari et al., Pareto smoothed importance sampling): the weights have about
    1/k finite moments. k < 0.5: finite variance, the jackknife error bars are trustworthy;
    0.5 <= k < 0.7: finite mean, estimates converge slowly; k >= 0.7: the estimate is
    dominated by draws not yet made -- reweighting and independence MH are exact only in a
    limit the run has not reached, whatever their error bars say. Bounded weights give k < 0
    asymptotically. nan with fewer than 25 finite weights.
    """
    lw = torch.as_tensor(log_w, dtype=torch.float64).reshape(-1)
    lw = lw[lw > -math.inf]
    n = lw.numel()
    if n < 25:
        return math.nan
    m = int(min(n / 5, 3 * math.sqrt(n)))
    top = torch.sort(lw).values[-(m + 1):]
    w = torch.exp(top - top[-1])  # scale-free: the fit is invariant under w -> c w
    y = (w[1:] - w[0]).clamp_min(0.0)
    if not bool((y > 0).any()):
        return math.nan
    y = y / y[-1]
    n_y = y.numel()
    n_grid = 30 + int(math.sqrt(n_y))
    j = torch.arange(1, n_grid + 1, dtype=torch.float64)
    q1 = y[max(0, int(math.floor(n_y / 4 + 0.5)) - 1)]
    theta = 1.0 / y[-1] + (1 - torch.sqrt(n_grid / (j - 0.5))) / (3 * q1.clamp_min(1e-300))
    k = torch.log1p(-theta.view(-1, 1) * y.view(1, -1)).mean(1)  # -xi for each theta
    prof = n_y * (torch.log(-theta / k) - k - 1)
    weights = 1.0 / torch.exp(prof.view(1, -1) - prof.view(-1, 1)).sum(1)
    theta_hat = float((weights * theta).sum())
    xi = float(torch.log1p(-theta_hat * y).mean())
    return (n_y * xi + 10 * 0.5) / (n_y + 10)


class WeightedAccumulator:
    """Mergeable per-bin weighted power sums; :meth:`estimate` gives reweighted observables."""

    def __init__(self, lattice: Lattice, n_bins: int, device=None):
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a rgdist Lattice, got {type(lattice).__name__}")
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
        self.lattice, self.n_bins = lattice, int(n_bins)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.count = torch.zeros(self.n_bins, dtype=torch.int64, device=self.device)
        self.sums = {k: torch.zeros(self.n_bins, **f64) for k in _SCALARS}
        self.sums["w_g2"] = torch.zeros((self.n_bins, *lattice.shape), **f64)
        self.log_ref = -math.inf

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def _rescale(self, new_ref: float) -> None:
        if new_ref > self.log_ref:
            if self.log_ref > -math.inf:
                factor = math.exp(self.log_ref - new_ref)
                for k, v in self.sums.items():
                    v.mul_(factor * factor if k == "w2" else factor)
            self.log_ref = new_ref

    @torch.no_grad()
    def update(self, phi: torch.Tensor, log_w: torch.Tensor, bins) -> "WeightedAccumulator":
        """Add ``phi`` (B, *shape) with log-weights (B,) to ``bins`` (an int or (B,) ints)."""
        self.lattice.check_field(phi)
        x = phi.detach().to(torch.float64)
        lw = torch.as_tensor(log_w).to(device=x.device, dtype=torch.float64).reshape(-1)
        B = x.shape[0]
        if lw.shape[0] != B:
            raise ValueError(f"log_w must have shape ({B},), got {tuple(lw.shape)}")
        if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
            raise ValueError("log_w must not contain nan or +inf")
        if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
            bins = torch.full((B,), int(bins), dtype=torch.int64)
        idx = torch.as_tensor(bins).to(device=x.device, dtype=torch.int64).reshape(-1)
        if idx.shape[0] != B or (B and (int(idx.min()) < 0 or int(idx.max()) >= self.n_bins)):
            raise ValueError(f"bins must be ints in [0, {self.n_bins - 1}], one per configuration")
        if B and bool((lw > -math.inf).any()):
            self._rescale(float(lw.max()))
        w = torch.exp(lw - self.log_ref) if self.log_ref > -math.inf else torch.zeros_like(lw)
        m = obs.magnetization(x)
        per = {"w": w, "w2": w * w, "w_m": w * m, "w_abs_m": w * m.abs(), "w_m2": w * m * m,
               "w_m4": w * m ** 4, "w_max_abs": w * obs.max_abs(x),
               "w_g2": w.view((-1,) + (1,) * self.lattice.d) * obs.two_point(x, self.lattice)}
        for k, v in per.items():
            part = torch.zeros((self.n_bins, *v.shape[1:]), dtype=torch.float64, device=x.device)
            part.index_add_(0, idx, v)
            self.sums[k] += part.to(self.device)
        self.count += torch.bincount(idx, minlength=self.n_bins).to(self.device)
        return self

    def merge(self, other: "WeightedAccumulator") -> "WeightedAccumulator":
        """Add ``other`` (same lattice and n_bins) into self, aligning the weight scales."""
        if not isinstance(other, WeightedAccumulator) or other.lattice != self.lattice \
                or other.n_bins != self.n_bins:
            raise ValueError("other must be a WeightedAccumulator with the same lattice and "
                             "n_bins")
        self._rescale(other.log_ref)
        if other.log_ref > -math.inf:
            f = math.exp(other.log_ref - self.log_ref)
            for k, v in self.sums.items():
                v += other.sums[k].to(self.device) * (f * f if k == "w2" else f)
        self.count += other.count.to(self.device)
        return self

    def estimate(self) -> dict:
        """{name: (value, err)}: the reweighted observables of rgdist.measure.observables
        (m, abs_m, m2, m4, chi, chi_conn, binder, xi2, m_R, lambda_R, Z, g2), mean_max_abs,
        and ess_fraction (= (mean w)^2 / mean w^2, jackknifed like the rest)."""
        if self.n == 0 or not self.log_ref > -math.inf:
            raise ValueError("estimate() needs at least one configuration with weight > 0")
        sums = {k: v.cpu().numpy() for k, v in self.sums.items()}
        lattice = self.lattice

        def derived(means):
            w = means["w"]
            wg = w.reshape(w.shape + (1,) * lattice.d)
            moments = {"m": means["w_m"] / w, "abs_m": means["w_abs_m"] / w,
                       "m2": means["w_m2"] / w, "m4": means["w_m4"] / w,
                       "g2": means["w_g2"] / wg}
            out = obs.ensemble_observables(moments, lattice)
            out["mean_max_abs"] = means["w_max_abs"] / w
            out["ess_fraction"] = w * w / means["w2"]
            return out

        with np.errstate(divide="ignore", invalid="ignore"):
            return jackknife(derived, sums, self.count.cpu().numpy())


def reweight(phi: torch.Tensor, log_w: torch.Tensor, lattice: Lattice, *,
             n_bins: int = 32) -> dict:
    """Reweighted observables of independent samples (bins: sample index mod n_bins)."""
    acc = WeightedAccumulator(lattice, n_bins)
    acc.update(phi, log_w, torch.arange(phi.shape[0]) % n_bins)
    return acc.estimate()
