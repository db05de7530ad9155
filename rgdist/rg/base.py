"""The Scheme base class: a linear noising SDE diagonal in momentum space, and its exact
Gaussian kernel, scores, prior and time grids (SPEC section 4). The concrete schemes live in
rgdist.rg.carosso (heat kernel), rgdist.rg.polchinski and rgdist.rg.baselines (VP, VE); the
registry is rgdist.rg.schemes.

Every scheme is  d phi~_t(p) = -alpha_t(p) phi~_t(p) dt + beta_t(p) dW~_t(p)  with dW white
(spectrum 1 in G2 units), so the transition kernel is an exact Gaussian:

    phi~_t(p) = A_t(p) phi~_0(p) + sqrt(Sigma_t(p)) xi~(p),   A_t = exp(-int_0^t alpha),
    Sigma_t   = int_0^t (A_t/A_s)^2 beta_s^2 ds              (G2 units: white noise = 1),

which obey dA/dt = -alpha A and dSigma/dt = -2 alpha Sigma + beta^2, A_0 = 1, Sigma_0 = 0.
If the data is Gaussian with spectrum G(p), p_t is Gaussian with spectrum A_t^2 G + Sigma_t and
its score is  s_t(phi) = -ifft(fft(phi) / (A_t^2 G + Sigma_t)).

Time arguments: a float (result of shape ``lattice.shape``, float64 on the CPU) or a tensor of
any shape S (result of shape ``(*S, *lattice.shape)``, on the tensor's device, in its floating
dtype -- pass float64 times). All closed forms are evaluated with exp/expm1 of differences so
that no cancellation occurs near t = 0 or at w = 0.
"""
from __future__ import annotations

import abc
import math

import torch

from rgdist.lattice import Lattice
from rgdist.rg import grids
from rgdist.catalog import SCHEME_DEFAULTS, check_scheme_params

_D = SCHEME_DEFAULTS  # the one table of defaults (shared with the campaign schema)


def _real(name: str, value, *, low: float | None = None, strict: bool = True,
          what: str = "") -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value}")
    if low is not None and (value <= low if strict else value < low):
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be {rel} {low}{what}, got {value}")
    return value


def _param(name: str, value) -> float:
    """A scheme parameter: a finite float within its bound (rgdist.catalog.SCHEME_BOUNDS, the
    rule that the campaign schema applies too)."""
    value = _real(name, value)
    check_scheme_params("", {name: value})
    return value


class Scheme(abc.ABC):
    """A linear, momentum-diagonal noising SDE on ``lattice`` over times [0, T].

    Subclasses implement the closed forms ``_log_A, _Sigma, _alpha, _beta2`` as functions of a
    broadcastable time tensor ``t`` and a tensor ``p`` of phat^2 values, and may mark
    ``_frozen(p)`` modes that the process never touches (alpha = beta^2 = 0 at all t).
    """

    name = "scheme"
    default_t_min = 1e-3

    def __init__(self, lattice: Lattice, T: float):
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a rgdist.lattice.Lattice, got {type(lattice).__name__}")
        self.lattice = lattice
        self.T = _param("T", T)
        self._phat2_cache: dict = {}

    # ---- closed forms supplied by subclasses -------------------------------------------
    @abc.abstractmethod
    def _log_A(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _Sigma(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _alpha(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _beta2(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor: ...

    def _frozen(self, p: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(p, dtype=torch.bool)

    @abc.abstractmethod
    def params(self) -> dict:
        """The constructor parameters (T included), as plain floats."""

    # ---- helpers ------------------------------------------------------------------------
    def phat2(self, device=None, dtype=torch.float64) -> torch.Tensor:
        key = (str(torch.device(device) if device is not None else torch.device("cpu")), dtype)
        if key not in self._phat2_cache:
            self._phat2_cache[key] = self.lattice.phat2(device=device, dtype=dtype)
        return self._phat2_cache[key]

    def _time(self, t):
        """(t as a tensor shaped (*S, 1, ..., 1), S)."""
        if isinstance(t, torch.Tensor):
            dtype = t.dtype if t.is_floating_point() else torch.float64
            shape = tuple(t.shape)
            return t.to(dtype).reshape(*shape, *([1] * self.lattice.d)), shape
        t = _real("t", t, low=0.0, strict=False)
        return torch.tensor(t, dtype=torch.float64), ()

    def _eval(self, fn, t) -> torch.Tensor:
        tt, shape = self._time(t)
        out = fn(tt, self.phat2(tt.device, tt.dtype))
        return torch.broadcast_to(out, (*shape, *self.lattice.shape))

    def _spectrum(self, G, like: torch.Tensor) -> torch.Tensor:
        if not isinstance(G, torch.Tensor):
            G = torch.as_tensor(G, dtype=like.dtype)
        G = G.to(device=like.device, dtype=like.dtype)
        if G.dim() > 0 and tuple(G.shape[-self.lattice.d:]) != self.lattice.shape:
            raise ValueError(f"G must be a spectrum of shape {self.lattice.shape} (or a scalar), "
                             f"got {tuple(G.shape)}")
        return G

    # ---- closed forms -------------------------------------------------------------------
    def alpha(self, t) -> torch.Tensor:
        """Drift rate alpha_t(p) = -d log A_t / dt."""
        return self._eval(self._alpha, t)

    def beta2(self, t) -> torch.Tensor:
        """Noise rate beta_t(p)^2 (G2 units; white noise = 1)."""
        return self._eval(self._beta2, t)

    def log_A(self, t) -> torch.Tensor:
        """log A_t(p) = -int_0^t alpha."""
        return self._eval(self._log_A, t)

    def A(self, t) -> torch.Tensor:
        """Signal factor A_t(p) = exp(-int_0^t alpha)."""
        return self._eval(lambda tt, p: torch.exp(self._log_A(tt, p)), t)

    def Sigma(self, t) -> torch.Tensor:
        """Noise spectrum Sigma_t(p) of phi_t given phi_0 (G2 units)."""
        return self._eval(self._Sigma, t)

    def frozen_modes(self, device=None) -> torch.Tensor:
        """Boolean mask (lattice.shape) of modes the process never noises (A = 1, Sigma = 0)."""
        return self._frozen(self.phat2(device))

    def marginal_spectrum(self, t, G) -> torch.Tensor:
        """A_t^2 G + Sigma_t: the spectrum of p_t for Gaussian data of spectrum G."""
        tt, shape = self._time(t)
        p = self.phat2(tt.device, tt.dtype)
        G = self._spectrum(G, p)
        out = torch.exp(2 * self._log_A(tt, p)) * G + self._Sigma(tt, p)
        return torch.broadcast_to(out, (*shape, *self.lattice.shape))

    def log_snr(self, t, G=None) -> torch.Tensor:
        """log(A_t^2 G / Sigma_t) per mode (G = 1 if omitted; +inf on frozen modes)."""
        tt, shape = self._time(t)
        p = self.phat2(tt.device, tt.dtype)
        out = self._log_snr_modes(tt, p)
        if G is not None:
            out = out + torch.log(self._spectrum(G, p))
        return torch.broadcast_to(out, (*shape, *self.lattice.shape))

    def _log_snr_modes(self, tt, p):
        return 2 * self._log_A(tt, p) - torch.log(self._Sigma(tt, p))

    # ---- sampling and scores ------------------------------------------------------------
    def _coeffs_for(self, phi: torch.Tensor, t):
        """A_t, Sigma_t in float64 on phi's device, shaped to broadcast against phi."""
        if isinstance(t, torch.Tensor):
            t = t.to(device=phi.device, dtype=torch.float64)
            if t.dim() == 1 and t.shape[0] != phi.shape[0]:
                raise ValueError(f"t must be a float or a tensor of shape ({phi.shape[0]},), "
                                 f"got shape {tuple(t.shape)}")
            if t.dim() > 1:
                raise ValueError(f"t must be a float or a 1D tensor, got shape {tuple(t.shape)}")
        else:
            t = torch.tensor(_real("t", t, low=0.0, strict=False), dtype=torch.float64,
                             device=phi.device)
        return self.A(t), self.Sigma(t)

    def sample_forward(self, phi0: torch.Tensor, t, generator: torch.Generator):
        """Draw phi_t | phi_0 exactly: phi_t = ifft(A_t fft(phi0)) + eps.

        ``t`` is a float or a tensor of shape (B,). ``eps`` is the colored noise added, with
        spectrum Sigma_t, i.e. eps = phi_t - A_t phi_0 (see :meth:`noise_score`).
        Returns ``(phi_t, eps)`` in phi0's dtype.
        """
        self.lattice.check_field(phi0, "phi0")
        A, Sigma = self._coeffs_for(phi0, t)
        white = torch.randn(phi0.shape, generator=generator, device=phi0.device, dtype=phi0.dtype)
        lat = self.lattice
        eps = lat.ifft(lat.fft(white) * Sigma.clamp_min(0).sqrt().to(phi0.dtype))
        phi_t = lat.ifft(lat.fft(phi0) * A.to(phi0.dtype)) + eps
        return phi_t, eps

    def noise_score(self, eps: torch.Tensor, t) -> torch.Tensor:
        """-ifft(fft(eps) / Sigma_t): the conditional score given the added noise.

        On modes with Sigma_t = 0 (frozen modes, or t = 0) the noise is zero and the entry is
        set to 0.
        """
        self.lattice.check_field(eps, "eps")
        _, Sigma = self._coeffs_for(eps, t)
        safe = torch.where(Sigma > 0, Sigma, torch.ones_like(Sigma))
        inv = torch.where(Sigma > 0, 1.0 / safe, torch.zeros_like(Sigma)).to(eps.dtype)
        return -self.lattice.ifft(self.lattice.fft(eps) * inv)

    def conditional_score(self, phi_t: torch.Tensor, phi0: torch.Tensor, t) -> torch.Tensor:
        """grad log p(phi_t | phi_0) = -ifft(fft(phi_t - A_t phi_0) / Sigma_t)."""
        self.lattice.check_field(phi_t, "phi_t")
        self.lattice.check_field(phi0, "phi0")
        A, _ = self._coeffs_for(phi0, t)
        eps = phi_t - self.lattice.ifft(self.lattice.fft(phi0) * A.to(phi0.dtype))
        return self.noise_score(eps, t)

    def gaussian_score(self, phi: torch.Tensor, t, G) -> torch.Tensor:
        """Exact score of p_t for Gaussian data of spectrum G: -ifft(fft(phi)/(A_t^2 G + Sigma_t)).

        A spectrum that underflows to 0 (variance-collapsed modes) is clamped to the smallest
        positive float, so the entry stays finite.
        """
        self.lattice.check_field(phi, "phi")
        A, Sigma = self._coeffs_for(phi, t)
        G = self._spectrum(G, A)
        P = (A * A * G + Sigma).clamp_min(torch.finfo(torch.float64).tiny)
        return -self.lattice.ifft(self.lattice.fft(phi) * (1.0 / P).to(phi.dtype))

    # ---- prior at t = T ------------------------------------------------------------------
    def prior_spectrum(self, G=None) -> torch.Tensor:
        """Spectrum of the terminal law: Sigma_T + A_T^2 G (Sigma_T alone if G is None)."""
        if G is None:
            return self.Sigma(self.T)
        return self.marginal_spectrum(self.T, G)

    def sample_prior(self, batch: int, generator: torch.Generator, G=None, *,
                     dtype=torch.float64, device=None, zero_mode_pool=None) -> torch.Tensor:
        """Draw ``batch`` fields from the Gaussian with spectrum :meth:`prior_spectrum` (G).

        Frozen modes (the zero mode of Polchinski-type schemes without IR regulator) never
        move, so their terminal law is the data's own: they are resampled from
        ``zero_mode_pool``, a 1D tensor of data magnetizations M = mean_x phi_x (one per
        configuration); the sample's mean is set to A_T(0) M for a uniformly drawn M. This is
        exact for the zero mode's marginal; its correlation with the other modes is lost only
        to the extent that they are not yet pure noise at T (see :meth:`leftover`).
        ``zero_mode_pool`` is ignored when no mode is frozen.
        """
        if isinstance(batch, bool) or not hasattr(batch, "__index__") or int(batch) < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        batch = int(batch)
        spec = self.prior_spectrum(G if G is None else torch.as_tensor(G).to(torch.float64).cpu())
        spec = spec.to(device=device, dtype=dtype)
        frozen = self.frozen_modes()
        if bool(frozen.any()) and zero_mode_pool is None:
            raise ValueError(
                f"scheme {self.name!r} never noises the zero mode (mu2 = 0): set mu2 > 0 or "
                "pass zero_mode_pool (a 1D tensor of data magnetizations) to sample_prior")
        phi = self.lattice.colored_noise(spec, batch, generator)
        if bool(frozen.any()):
            pool = torch.as_tensor(zero_mode_pool).to(device=spec.device, dtype=dtype).reshape(-1)
            if pool.numel() < 1:
                raise ValueError("zero_mode_pool must be a non-empty 1D tensor of magnetizations")
            idx = torch.randint(pool.numel(), (batch,), generator=generator, device=spec.device)
            a0 = float(self.A(self.T).reshape(-1)[0])
            mean = phi.mean(dim=self.lattice.dims, keepdim=True)
            target = (a0 * pool[idx]).reshape(batch, *([1] * self.lattice.d))
            phi = phi - mean + target
        return phi

    def leftover(self, G) -> dict:
        """Diagnostic ratio A_T^2 G / Sigma_T of data signal left at T over the noise.

        Returns {"ratio": tensor (lattice.shape), "max": float, "mean": float,
        "n_frozen": int, "dynamic_range": float}; max and mean run over the noised modes only
        (frozen modes are resampled from the data, see :meth:`sample_prior`).
        ``dynamic_range`` = max/min of the prior spectrum over noised modes: position-space
        round trips (score calls) lose the small modes once it nears 1/eps_machine^2 (1e32 in
        float64, 1e14 in float32), which limits T for variance-collapsing schemes.
        """
        A = self.A(self.T)
        Sigma = self.Sigma(self.T)
        G = self._spectrum(G, A)
        signal = torch.broadcast_to(A * A * G, Sigma.shape)
        ratio = torch.where(Sigma > 0, signal / torch.where(Sigma > 0, Sigma, 1.0),
                            torch.full_like(Sigma, math.inf))
        noised = ~self.frozen_modes()
        vals = ratio[noised]
        prior = torch.broadcast_to(signal + Sigma, Sigma.shape)[noised]
        return {"ratio": ratio, "max": float(vals.max()), "mean": float(vals.mean()),
                "n_frozen": int((~noised).sum()),
                "dynamic_range": float(prior.max() / prior.min())}

    # ---- time grids ----------------------------------------------------------------------
    def reference_phat2(self) -> float:
        """phat^2 of the lowest non-zero momentum, the reference mode of 'snr' grids."""
        p = self.phat2()
        return float(p[p > 0].min())

    def time_grid(self, n_steps: int, kind: str = "uniform", t_min: float | None = None
                  ) -> torch.Tensor:
        """Decreasing float64 grid T = t_0 > ... > t_n = t_min (see rgdist.rg.grids).

        kind: "uniform" (uniform in t; for Polchinski-type schemes this is uniform in
        log Lambda_t), "log" (geometric in t; uniform in log Lambda for the heat-kernel
        scheme), "snr" (uniform in the log SNR of the lowest non-zero momentum).
        t_min defaults to ``default_t_min`` of the scheme.
        """
        t_min = self.default_t_min if t_min is None else t_min
        if kind == "uniform":
            return grids.uniform_grid(self.T, t_min, n_steps)
        if kind == "log":
            return grids.geometric_grid(self.T, t_min, n_steps)
        if kind == "snr":
            p_ref = torch.tensor([self.reference_phat2()], dtype=torch.float64)
            return grids.snr_grid(lambda t: self._log_snr_modes(t[:, None], p_ref)[:, 0],
                                  self.T, t_min, n_steps)
        raise ValueError(f"kind must be one of {grids.GRID_KINDS}, got {kind!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({self.lattice!r}, {args})"
