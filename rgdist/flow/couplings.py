"""Running couplings c_i(t) of the effective-action score and their Gaussian prediction.

The effective-action model (rgdist.models.EffectiveActionScore) writes the score as
s = -grad S_t with  S_t[phi] = sum_i c_i(t) O_i(phi),  O_phi2 = sum_x phi_x^2,
O_grad2 = sum_x sum_mu (phi_{x+mu} - phi_x)^2, O_phi4, O_phi6. :func:`learned_couplings`
reads c_i(t) off a model on a t grid.

Gaussian prediction (:func:`gaussian_couplings`). For the quadratic part,
-grad[c_phi2 O_phi2 + c_grad2 O_grad2] = -(2 c_phi2 - 2 c_grad2 Lap) phi, i.e. in momentum
space  s~(p) = -K(p) phi~(p)  with  K(p) = 2 c_phi2 + 2 c_grad2 phat^2.
For Gaussian data of spectrum G, p_t is Gaussian with spectrum S_t = A_t^2 G + Sigma_t and
true score s~ = -phi~/S_t, which is local-quadratic only if 1/S_t is linear in phat^2. The
best quadratic local action in the sense of the training objective follows from the DSM loss
(rgdist.train.dsm, mode weights lambda_t(p)): DSM equals explicit score matching up to a
constant, and with E|phi~_t(p)|^2 = V S_t(p)

    L_t(K) = (1/V^2) sum_p lambda_t(p) E|(-K(p) + 1/S_t(p)) phi~_t(p)|^2 + const
           = (1/V)   sum_p lambda_t(p) S_t(p) (K(p) - 1/S_t(p))^2 + const,

a weighted least-squares fit of y = 1/S_t(p) by a + b x, x = phat^2, with weights
w(p) = lambda_t(p) S_t(p) over the noised modes (frozen modes carry no DSM signal):

    b = sum w (x - xbar)(y - ybar) / sum w (x - xbar)^2,   a = ybar - b xbar,
    (xbar, ybar the w-weighted means),   c_phi2 = a/2,   c_grad2 = b/2.

``weighting`` names lambda_t as in the DSM loss: "sigma" (Sigma_t), "likelihood" (beta_t^2),
"none" (1), with the zero mode's weight times ``zero_mode_weight`` as in the loss. Since
the optimum at each t does not depend on the overall scale of w, the time weight w(t) of the
loss drops out; at t = 0 with "sigma" (Sigma_0 = 0) the t -> 0 limit
Sigma_t/t -> beta_0^2 is used. For the free theory at t = 0, 1/G = phat^2 + m2 is exactly
linear: c_phi2 = m2/2, c_grad2 = 1/2 (the standard action) for any weighting. The Gaussian
prediction of c_phi4 and c_phi6 is 0.

For a model wrapped in GaussianExactScore (score = exact Gaussian score of the measured
spectrum + a learned remainder), the c_i(t) are corrections on top of the Wiener filter:
their Gaussian prediction is 0 for all i, not the fit above.
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist.flow.base import check_scheme, check_t_grid
from rgdist.lattice.geometry import Lattice

#: DSM mode weights lambda_t(p) (the names of rgdist.train.dsm.WEIGHTINGS)
WEIGHTINGS = ("sigma", "likelihood", "none")
QUADRATIC = ("phi2", "grad2")


def _mode_weights(scheme, t: torch.Tensor, weighting: str, zero_mode_weight: float = 1.0
                  ) -> torch.Tensor:
    """lambda_t(p) for times t (K,), shape (K, *shape)."""
    from rgdist.train.dsm import boost_zero_mode

    if weighting == "sigma":
        lam = scheme.Sigma(t)
        at_zero = (t == 0).reshape((-1,) + (1,) * scheme.lattice.d)
        lam = torch.where(at_zero, scheme.beta2(t), lam)
    elif weighting == "likelihood":
        lam = scheme.beta2(t)
    else:
        lam = torch.ones((t.shape[0], *scheme.lattice.shape), dtype=torch.float64)
    return boost_zero_mode(lam, zero_mode_weight, scheme.lattice.d)


def gaussian_couplings(lattice: Lattice, scheme, G, t_grid, weighting: str = "sigma",
                       zero_mode_weight: float = 1.0) -> dict[str, np.ndarray]:
    """DSM-optimal quadratic couplings for Gaussian data of spectrum G (module docstring).

    Returns float64 arrays of shape (K,) (t sorted increasing): ``t``, ``phi2`` (c_phi2),
    ``grad2`` (c_grad2), ``phi4`` and ``phi6`` (0), and ``rel_residual``: the weighted RMS of
    K(p) S_t(p) - 1 (0 when 1/S_t is exactly linear in phat^2).
    """
    if not isinstance(lattice, Lattice):
        raise ValueError(f"lattice must be a rgdist Lattice, got {type(lattice).__name__}")
    scheme = check_scheme(scheme)
    if scheme.lattice != lattice:
        raise ValueError(f"lattice {lattice} does not match the scheme's lattice {scheme.lattice}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    from rgdist.train.dsm import check_zero_mode_weight

    zero_mode_weight = check_zero_mode_weight(zero_mode_weight)
    t = check_t_grid(t_grid, scheme.T)
    G = torch.as_tensor(G, dtype=torch.float64).detach().cpu()
    if tuple(G.shape) != lattice.shape or not bool(torch.isfinite(G).all()) or not bool((G > 0).all()):
        raise ValueError(f"G must be a finite spectrum > 0 of shape {lattice.shape}, "
                         f"got shape {tuple(G.shape)}")
    tt = torch.as_tensor(t, dtype=torch.float64)
    S = scheme.marginal_spectrum(tt, G)                       # (K, *shape)
    lam = _mode_weights(scheme, tt, weighting, zero_mode_weight)
    x = lattice.phat2().expand_as(S)
    noised = ~scheme.frozen_modes().expand_as(S)
    valid = noised & (S > 0) & torch.isfinite(1.0 / S)
    y = torch.where(valid, 1.0 / torch.where(valid, S, torch.ones_like(S)), torch.zeros_like(S))
    w = torch.where(valid, lam * S, torch.zeros_like(S)).clamp_min(0)
    dims = tuple(range(1, S.dim()))
    wsum = w.sum(dims)
    if bool((wsum <= 0).any()):
        bad = t[(wsum <= 0).numpy()].tolist()
        raise ValueError(f"no noised mode carries DSM weight at t = {bad} "
                         f"(weighting={weighting!r}); choose another weighting")
    wn = w / wsum.reshape((-1,) + (1,) * lattice.d)
    view = (-1,) + (1,) * lattice.d
    xbar = (wn * x).sum(dims)
    ybar = (wn * y).sum(dims)
    dx = x - xbar.reshape(view)
    dy = y - ybar.reshape(view)
    sxx = (wn * dx * dx).sum(dims)
    b = torch.where(sxx > 0, (wn * dx * dy).sum(dims) / torch.where(sxx > 0, sxx, 1.0),
                    torch.zeros_like(sxx))
    a = ybar - b * xbar
    K = a.reshape(view) + b.reshape(view) * x
    resid = torch.sqrt((wn * (K * torch.where(valid, S, 0.0) - valid.double()) ** 2).sum(dims))
    zeros = np.zeros(t.shape)
    return {"t": t, "phi2": (a / 2).numpy(), "grad2": (b / 2).numpy(), "phi4": zeros,
            "phi6": zeros.copy(), "rel_residual": resid.numpy()}


def learned_couplings(model, t_grid, *, T: float | None = None) -> dict[str, np.ndarray]:
    """c_i(t) of an effective-action model (anything with ``couplings(t) -> {name: (K,)}``)
    on the sorted t grid: ``{"t": (K,), name: (K,) float64}``. ``T`` (default: the model's
    scheme T when it has one, else no upper bound check beyond finiteness) bounds the grid."""
    fn = getattr(model, "couplings", None)
    if not callable(fn):
        raise ValueError(f"model must have running couplings (an effective-action model), "
                         f"got {type(model).__name__}")
    if T is None:
        T = float(getattr(getattr(model, "scheme", None), "T", np.inf))
    t = check_t_grid(t_grid, T)
    try:
        ref = next(model.parameters())
        tt = torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
    except (AttributeError, StopIteration):
        tt = torch.as_tensor(t, dtype=torch.float64)
    with torch.no_grad():
        c = fn(tt)
    out = {"t": t}
    for name, v in c.items():
        out[name] = torch.as_tensor(v).detach().cpu().to(torch.float64).reshape(-1).numpy()
        if out[name].shape != t.shape:
            raise ValueError(f"couplings()[{name!r}] has shape {out[name].shape}, expected {t.shape}")
    return out
