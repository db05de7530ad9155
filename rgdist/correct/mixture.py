"""Mixture proposals and the defensive mixture that makes the exact correction robust.

A proposal q that misses part of the target's support (an under-trained sampler whose
magnetization distribution is too narrow, say) gives importance weights w = p/q with a heavy
upper tail: reweighting and independence MH are still exact in the limit, but their finite-run
estimates are biased low and their error bars too small. The cure is a *defensive mixture*

    q_mix = (1 - eps) q_flow + eps q_gauss,      q_gauss = N(0, C),

with C a circulant covariance (the measured two-point function, say). For the phi^4 action
with lam > 0 the Gaussian has heavier tails than the target in every direction, so

    log w_gauss(phi) = -S[phi] - log q_gauss(phi) <= B(C)   (finite; see log_weight_bound),

and therefore  log w_mix <= B(C) - log eps  for ANY q_flow: the weights are bounded, their
variance is finite (central-limit error bars are valid) and the independence MH chain is
uniformly ergodic (bounded weights are the criterion for that). Where the flow is good the
mixture keeps its efficiency (w_mix <= w_flow / (1 - eps)).

The mixture density needs every component's density at every draw, so each component must
provide ``log_prob``: the flow proposal must then be able to invert its map at arbitrary
configurations (``integrator="implicit"`` has an explicit inverse; Newton inversion of the
explicit integrators can fail away from the flow's typical set).
"""
from __future__ import annotations

import math

import torch

from rgdist.correct.metropolis import GaussianProposal
from rgdist.lattice.action import Phi4Action
from rgdist.lattice.geometry import Lattice


class MixtureProposal:
    """q = sum_k a_k q_k. ``components`` provide ``sample(n, generator) -> (phi, log_q)``
    and ``log_prob(phi)``; ``weights`` are positive (normalized here).

    ``sample`` draws i.i.d. component labels from ``generator`` (torch.multinomial), then
    each component's draws in component order, and returns the mixture's log-density at every
    draw (each draw is evaluated under every other component). ``last_labels`` holds the
    labels of the latest draw; ``nfe``/``vjp`` are the mean per draw over the components
    (sampling cost) and ``log_prob_calls`` counts cross-evaluations.
    """

    def __init__(self, components, weights):
        components = list(components)
        if not components:
            raise ValueError("components must be a non-empty list of proposals")
        for i, comp in enumerate(components):
            for method in ("sample", "log_prob"):
                if not callable(getattr(comp, method, None)):
                    raise ValueError(f"components[{i}] ({type(comp).__name__}) has no {method}(); "
                                     "every mixture component needs sample and log_prob")
        try:
            w = [float(x) for x in weights]
        except (TypeError, ValueError):
            raise ValueError(f"weights must be a list of positive numbers, got {weights!r}") from None
        if len(w) != len(components):
            raise ValueError(f"weights has {len(w)} entries for {len(components)} components")
        if not all(math.isfinite(x) and x > 0 for x in w):
            raise ValueError(f"weights must be finite and > 0, got {weights!r}")
        total = sum(w)
        self.components = components
        self.weights = torch.tensor([x / total for x in w], dtype=torch.float64)
        self.lattice = getattr(components[0], "lattice", None)
        self.last_labels: torch.Tensor | None = None
        self.nfe = self.vjp = 0.0
        self.log_prob_calls = 0

    def _mix(self, parts: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([p.to(torch.float64) for p in parts])
        log_a = torch.log(self.weights).to(stacked.device).view(-1, 1)
        return torch.logsumexp(stacked + log_a, dim=0)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(n, bool) or not hasattr(n, "__index__") or int(n) < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        n = int(n)
        probs = self.weights.to(generator.device)
        labels = torch.multinomial(probs, n, replacement=True, generator=generator).cpu()
        phi, own = None, {}
        nfe = vjp = 0.0
        for k, comp in enumerate(self.components):  # each component's draws, in order
            idx = torch.nonzero(labels == k).flatten()
            if idx.numel() == 0:
                continue
            x, lq = comp.sample(int(idx.numel()), generator)
            if phi is None:
                phi = torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device)
            idx = idx.to(x.device)
            phi[idx] = x
            own[k] = (idx, lq.to(torch.float64))
            nfe += idx.numel() / n * float(getattr(comp, "nfe", 0) or 0)
            vjp += idx.numel() / n * float(getattr(comp, "vjp", 0) or 0)
        parts = []
        for k, comp in enumerate(self.components):  # every draw under every component
            full = torch.empty(n, dtype=torch.float64, device=phi.device)
            others = torch.ones(n, dtype=torch.bool, device=phi.device)
            if k in own:
                idx, lq = own[k]
                full[idx] = lq
                others[idx] = False
            if bool(others.any()):
                full[others] = comp.log_prob(phi[others]).to(torch.float64)
                self.log_prob_calls += int(others.sum())
            parts.append(full)
        self.last_labels, self.nfe, self.vjp = labels, nfe, vjp
        return phi, self._mix(parts)

    def log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        return self._mix([comp.log_prob(phi) for comp in self.components])


def log_weight_bound(action: Phi4Action, lattice: Lattice, spectrum) -> float:
    """An upper bound B on log w = -S[phi] - log N(phi; 0, C) over ALL configurations.

    With a(p) = 1/C(p) - phat^2(p) (C in G2 units, phat^2 = sum_mu 4 sin^2(p_mu/2)) and
    b = max_p a(p) - m2:  1/2 phi C^-1 phi - 1/2 phi (-Lap) phi <= 1/2 max_p a(p) sum_x phi_x^2,
    so log w <= sum_x [b phi_x^2 / 2 - lam phi_x^4 / 4] + 1/2 sum_p log(2 pi C(p))
             <= V b_+^2 / (4 lam) + 1/2 sum_p log(2 pi C(p)).
    For lam = 0 the bound is finite only if b <= 0 (C at least as wide as the free propagator
    at every momentum); otherwise the weights are unbounded and this raises ValueError.
    """
    if not isinstance(action, Phi4Action):
        raise ValueError(f"action must be a Phi4Action, got {type(action).__name__}")
    C = torch.as_tensor(spectrum, dtype=torch.float64)
    if tuple(C.shape) != lattice.shape or not bool((C > 0).all()):
        raise ValueError(f"spectrum must have shape {lattice.shape} and be > 0")
    a = 1.0 / C - lattice.phat2().to(torch.float64)
    b = float(a.max()) - action.m2
    const = 0.5 * float(torch.log(2 * math.pi * C).sum())
    if b <= 0:
        return const
    if action.lam == 0:
        raise ValueError(f"lam = 0 and the Gaussian is narrower than the target at some momentum "
                         f"(max_p [1/C - phat^2] - m2 = {b:.3g} > 0): the weights are unbounded")
    return lattice.volume * b * b / (4 * action.lam) + const


def _fraction(value) -> float:
    """The defensive fraction: a number in (0, 1)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"defensive fraction must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"defensive fraction must be a number in (0, 1), got {value}")
    return value


def defensive_mixture(proposal, lattice: Lattice, spectrum, fraction: float) -> MixtureProposal:
    """(1 - fraction) proposal + fraction N(0, C=spectrum): bounded importance weights for a
    phi^4 target with lam > 0 whatever ``proposal`` is (see the module docstring)."""
    fraction = _fraction(fraction)
    return MixtureProposal([proposal, GaussianProposal(lattice, spectrum)],
                           [1.0 - fraction, fraction])
