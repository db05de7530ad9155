"""Flow-based baseline: the equivariant continuous normalizing flow of Gerdes, de Haan,
Rainone, Bondesan and Cheng (arXiv 2207.00283), trained by reverse KL from the action alone.

One neural ODE on field space, d phi / d tau = v(phi, tau) for tau in [0, 1], carries a
free-field Gaussian prior (tau = 0) to the model q of the target e^{-S}/Z (tau = 1). The vector
field is translation equivariant and Z2 odd and its divergence is exact and O(V K), so

    log q(phi(1)) = log p0(phi(0)) - int_0^1 div v dtau

is computed alongside the sample by the same RK4 steps, and q can be corrected exactly
(reweighting or independence Metropolis with log w = -S - log q).

Modules, by role:

* :mod:`rgdist.flow.baseline.field`: :class:`BaselineField`, the vector field and the proof
  of its divergence formula.
* :mod:`rgdist.flow.baseline.cnf`: :class:`BaselineCNF`, the prior, the RK4 integration of
  (phi, int div v), sampling with log q.
* :mod:`rgdist.flow.baseline.train`: :class:`BaselineTrainConfig`, :class:`BaselineTrainer`
  (reverse KL, resumable bit for bit).
* :mod:`rgdist.flow.baseline.observables`: observables along the CNF's own flow time tau
  (:func:`baseline_flow`), and how tau lines up with an RG scheme's t.
* :mod:`rgdist.flow.baseline.layers`, :mod:`rgdist.flow.baseline.checks`: seeded dense
  layers and the tau embedding; argument checks.
"""
from rgdist.flow.baseline.cnf import BaselineCNF
from rgdist.flow.baseline.field import BaselineField
from rgdist.flow.baseline.observables import accumulate_baseline_flow, baseline_flow, tau_grid_steps
from rgdist.flow.baseline.train import BaselineTrainConfig, BaselineTrainer

__all__ = [
    "BaselineField",
    "BaselineCNF",
    "BaselineTrainConfig",
    "BaselineTrainer",
    "accumulate_baseline_flow",
    "baseline_flow",
    "tau_grid_steps",
]
