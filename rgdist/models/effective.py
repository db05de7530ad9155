"""Effective-action score and the exact-Gaussian wrapper (SPEC section 5).

EffectiveActionScore
    s(phi, t) = -grad_phi [ sum_i c_i(t) O_i(phi) ] + s~_theta(phi, t)
with local operators (sums over sites x, lattice directions mu) and closed-form gradients

    phi2  = sum_x phi_x^2                              grad: 2 phi
    grad2 = sum_x sum_mu (phi_{x+mu} - phi_x)^2        grad: -2 Lap(phi)
    phi4  = sum_x phi_x^4                              grad: 4 phi^3
    phi6  = sum_x phi_x^6                              grad: 6 phi^5

Lap(phi)_x = sum_mu (phi_{x+mu} + phi_{x-mu} - 2 phi_x). The running couplings c_i(t) are a
small MLP of the time embedding (layers.TimeEmbedding) and start at 0; read them with
``couplings(t)``. In the standard action S = sum[1/2 (grad phi)^2 + m2/2 phi^2 + lam/4 phi^4]
one has c_grad2 = 1/2, c_phi2 = m2/2, c_phi4 = lam/4. The optional remainder s~_theta is
any score model (a ConvScore) or None. Every term is odd in phi and translation equivariant;
the operators work in any dimension d.

GaussianExactScore
    s(phi, t) = s_G(phi, t) + r_t * net(phi, t),
    s_G = scheme.gaussian_score(phi, t, G_data)  = -ifft( fft(phi) / S_t ),
    S_t(p) = A_t(p)^2 G_data(p) + Sigma_t(p)     (the Gaussian-data marginal spectrum),
    r_t = ( mean_p S_t(p) )^{-1/2}.
G_data is the measured spectrum of the training data (G2 units), so s_G is the exact score
if the data were Gaussian with the same two-point function (the Wiener filter); the net
learns only the non-Gaussian remainder. Scale: a field whose per-site fluctuation is sigma
has a score of order 1/sigma; mean_p S_t(p) = <phi_t(x)^2> is the per-site variance of the
marginal, so r_t makes the net's output O(1) at every t and for every scheme (VE: r_t ~
1/sigma_t; Carosso, VP: r_t = O(1)). A scalar (not a per-mode filter) keeps the remainder
local. The net's output layer starts at 0, so training starts from the exact Gaussian score.
"""
from __future__ import annotations

import torch

from rgdist.catalog import MODEL_PARAMS, OPERATORS
from rgdist.lattice.action import laplacian
from rgdist.lattice.geometry import Lattice
from rgdist.models.layers import (
    Linear,
    ScoreModel,
    TimeEmbedding,
    as_time,
    check_dtype,
    check_positive_int,
    init_generator,
)

_P = MODEL_PARAMS["effective"]  # defaults shared with the campaign schema (rgdist.catalog)


def operator_values(phi: torch.Tensor, d: int) -> dict[str, torch.Tensor]:
    """O_i(phi) per configuration, shape (B,) each."""
    dims = tuple(range(-d, 0))
    phi2 = phi * phi
    grad2 = sum(((torch.roll(phi, -1, ax) - phi) ** 2) for ax in dims)
    return {"phi2": phi2.sum(dims), "grad2": grad2.sum(dims),
            "phi4": (phi2 * phi2).sum(dims), "phi6": (phi2 * phi2 * phi2).sum(dims)}


def operator_gradients(phi: torch.Tensor, d: int, names=OPERATORS) -> dict[str, torch.Tensor]:
    """dO_i/dphi in closed form, shape (B, *shape) each."""
    out = {}
    for name in names:
        if name == "phi2":
            out[name] = 2 * phi
        elif name == "grad2":
            out[name] = -2 * laplacian(phi, d)
        elif name == "phi4":
            out[name] = 4 * phi**3
        elif name == "phi6":
            out[name] = 6 * phi**5
    return out


def check_operators(operators) -> tuple[str, ...]:
    if isinstance(operators, str) or not hasattr(operators, "__iter__"):
        raise ValueError(f"operators must be a list drawn from {OPERATORS}, got {operators!r}")
    ops = tuple(operators)
    bad = [o for o in ops if o not in OPERATORS]
    if bad or not ops or len(set(ops)) != len(ops):
        raise ValueError(f"operators must be a non-empty list of distinct names from "
                         f"{OPERATORS}, got {list(ops)}")
    return ops


class EffectiveActionScore(ScoreModel):
    """s = -grad sum_i c_i(t) O_i(phi) + s~(phi, t) (s~ optional)."""

    def __init__(self, lattice: Lattice, *, operators=_P["operators"], hidden: int = 32,
                 n_freq: int = 4, t_max: float = 1.0, residual: ScoreModel | None = None,
                 dtype="float64", init_seed: int = 0,
                 generator: torch.Generator | None = None):
        super().__init__(lattice)
        self.operators = check_operators(operators)
        hidden = check_positive_int("hidden", hidden)
        n_freq = check_positive_int("n_freq", n_freq, 0)
        init_seed = check_positive_int("init_seed", init_seed, 0)
        if residual is not None and not isinstance(residual, ScoreModel):
            raise ValueError(f"residual must be a score model or None, got "
                             f"{type(residual).__name__}")
        g = init_generator(init_seed, generator)
        self.embed = TimeEmbedding(t_max, hidden, n_freq, g)
        self.head = Linear(hidden, len(self.operators), True, g, std=0.0)
        self.residual = residual
        self.to(check_dtype(dtype))

    def _coupling_tensor(self, t: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(t))  # (B, n_ops)

    def couplings(self, t) -> dict[str, torch.Tensor]:
        """The running couplings c_i(t) as a dict name -> tensor (B,)."""
        ref = next(self.parameters())
        t = as_time(t, 1 if torch.as_tensor(t).dim() == 0 else len(t), ref)
        c = self._coupling_tensor(t)
        return {name: c[:, i] for i, name in enumerate(self.operators)}

    def action(self, phi: torch.Tensor, t) -> torch.Tensor:
        """The learned effective action sum_i c_i(t) O_i(phi), per configuration (B,)."""
        self.lattice.check_field(phi)
        t = as_time(t, phi.shape[0], phi)
        c = self._coupling_tensor(t.to(self.param_dtype)).to(phi.dtype)
        values = operator_values(phi, self.d)
        return sum(c[:, i] * values[name] for i, name in enumerate(self.operators))

    @property
    def has_structured_jacobian(self) -> bool:
        """True when d score / d phi is circulant + diagonal (no residual net)."""
        return self.residual is None

    def score_jacobian(self, phi: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """d s / d phi = Circ(kernel) + diag(diag), in closed form (no autograd).

        With s = -sum_i c_i grad O_i the Jacobian is minus the Hessian of the effective action:
        phi2 -> 2 c I, grad2 -> -2 c Lap (eigenvalue 2 c phat^2(p)), phi4 -> 12 c diag(phi^2),
        phi6 -> 30 c diag(phi^4). Returns ``kernel`` (B, *shape), the circulant's eigenvalues
        per configuration (momentum space, real and even in p), and ``diag`` (B, *shape), the
        position-space diagonal. Only without a residual net (``has_structured_jacobian``).
        """
        if self.residual is not None:
            raise ValueError("score_jacobian needs an effective-action model without a residual "
                             "net (its Jacobian is then circulant + diagonal)")
        self.lattice.check_field(phi)
        t = as_time(t, phi.shape[0], phi)
        c = self._coupling_tensor(t.to(self.param_dtype)).to(phi.dtype)
        view = (-1,) + (1,) * self.d
        kernel = torch.zeros_like(phi)
        diag = torch.zeros_like(phi)
        for i, name in enumerate(self.operators):
            ci = c[:, i].reshape(view)
            if name == "phi2":
                kernel = kernel - 2 * ci
            elif name == "grad2":
                kernel = kernel - 2 * ci * self.lattice.phat2(phi.device, phi.dtype)
            elif name == "phi4":
                diag = diag - 12 * ci * phi * phi
            elif name == "phi6":
                diag = diag - 30 * ci * phi**4
        return kernel, diag

    def score(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self._coupling_tensor(t)
        grads = operator_gradients(phi, self.d, self.operators)
        view = (-1,) + (1,) * self.d
        s = -sum(c[:, i].reshape(view) * grads[name] for i, name in enumerate(self.operators))
        if self.residual is not None:
            s = s + self.residual(phi, t)
        return s


class GaussianExactScore(ScoreModel):
    """s = scheme.gaussian_score(phi, t, G_data) + (mean_p S_t)^{-1/2} * net(phi, t)."""

    def __init__(self, net: ScoreModel, scheme, data_spectrum: torch.Tensor):
        super().__init__(net.lattice)
        if not isinstance(net, ScoreModel):
            raise ValueError(f"net must be a score model, got {type(net).__name__}")
        for attr in ("gaussian_score", "marginal_spectrum"):
            if not callable(getattr(scheme, attr, None)):
                raise ValueError(f"scheme must provide {attr}(); got {type(scheme).__name__}")
        if getattr(scheme, "lattice", net.lattice) != net.lattice:
            raise ValueError(f"scheme lattice {scheme.lattice} differs from the model's "
                             f"{net.lattice}")
        G = torch.as_tensor(data_spectrum, dtype=torch.float64)
        if tuple(G.shape) != net.lattice.shape:
            raise ValueError(f"data_spectrum must have shape {net.lattice.shape}, got "
                             f"{tuple(G.shape)}")
        if not bool(torch.isfinite(G).all()) or not bool((G > 0).all()):
            raise ValueError("data_spectrum must be finite and > 0 at every momentum")
        self.net, self.scheme = net, scheme
        # its own copy: loading a state or binding a coupling writes into this buffer, which
        # must never change the caller's tensor
        self.register_buffer("data_spectrum", G.clone())

    def couplings(self, t) -> dict[str, torch.Tensor]:
        """The net's running couplings (effective-action nets only)."""
        if not hasattr(self.net, "couplings"):
            raise ValueError(f"{type(self.net).__name__} has no running couplings")
        return self.net.couplings(t)

    def residual_scale(self, t: torch.Tensor) -> torch.Tensor:
        """r_t = (mean_p S_t(p))^{-1/2}, shape (B,)."""
        G = self.data_spectrum.to(device=t.device)
        S = self.scheme.marginal_spectrum(t, G)
        return S.reshape(S.shape[0], -1).mean(1).rsqrt()

    def forward(self, phi: torch.Tensor, t) -> torch.Tensor:
        self.lattice.check_field(phi)
        t = as_time(t, phi.shape[0], phi)
        G = self.data_spectrum.to(dtype=phi.dtype, device=phi.device)
        # a sampler calls with one time for the whole batch: evaluate the mode-wise
        # coefficients once (the same numbers, without B copies of them)
        common = t.shape[0] > 1 and bool((t == t[0]).all())
        t_coef = t[0] if common else t
        s_gauss = self.scheme.gaussian_score(phi, t_coef, G)
        r = self.residual_scale(t_coef.reshape(-1)).to(phi.dtype)
        r = r.expand(phi.shape[0]).reshape((-1,) + (1,) * self.d)
        return s_gauss + r * self.net(phi, t)
