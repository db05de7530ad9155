"""Exact-RG noising schemes: linear SDEs diagonal in momentum space (SPEC section 4).

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
import inspect
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


class CarossoScheme(Scheme):
    """Heat-equation (gradient-flow) RG: alpha = w, beta^2 = 1, with w = phat^2 + mu2.

    A_t = exp(-w t),  Sigma_t = (1 - exp(-2 w t)) / (2 w)  (= t at w = 0). Tends to the free
    field of spectrum 1/(2w) (variance preserving in the seed's sense).
    """

    name = "carosso"
    default_t_min = _D["carosso"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["carosso"]["T"],
                 mu2: float = _D["carosso"]["mu2"]):
        super().__init__(lattice, T)
        self.mu2 = _param("mu2", mu2)

    def params(self) -> dict:
        return {"T": self.T, "mu2": self.mu2}

    def _log_A(self, t, p):
        return -(p + self.mu2) * t

    def _Sigma(self, t, p):
        w = p + self.mu2
        pos = w > 0
        w_safe = torch.where(pos, w, torch.ones_like(w))
        return torch.where(pos, -torch.expm1(-2 * w_safe * t) / (2 * w_safe), t + 0 * w)

    def _alpha(self, t, p):
        return (p + self.mu2) + 0 * t

    def _beta2(self, t, p):
        return torch.ones_like(p) + 0 * t


class PolchinskiScheme(Scheme):
    """Polchinski RG with regulator K_t = exp(-w / Lambda_t^2), Lambda_t = e^(-t) Lambda0.

    w = phat^2 + mu2, reference propagator C = 1/(phat^2 + m02). The SDE of the seed is
    alpha = -d/dt log K_t = 2 w e^(2t)/Lambda0^2 and beta^2 = -(dK_t/dt) C = alpha K_t C, with
    the exact kernel A_t = K_t/K_0 = exp(-w (e^(2t) - 1)/Lambda0^2) and
    Sigma_t = C K_t (1 - K_t/K_0). Variance collapsing: every noised mode tends to 0.
    With mu2 = 0 the zero mode is frozen (K_t(0) = 1): see :meth:`Scheme.sample_prior`.
    Keep T modest: the prior spectrum spans K_T(high)/K_T(low) = exp(-(w_high - w_low) e^(2T)/Lambda0^2)
    and the sampler loses the collapsed modes to rounding once that nears 1e-32 (float64; check
    ``leftover(G)["dynamic_range"]``). The IR mass mu2 hardly changes that range (it cancels
    from the ratio) but noises the low modes faster. The defaults (rgdist.catalog:
    T = 2, Lambda0 = 4, mu2 = 4) keep the range near 1e12 in d = 2 and the zero mode's
    leftover near 2e-6 G(0).
    """

    name = "polchinski"
    default_t_min = _D["polchinski"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["polchinski"]["T"],
                 Lambda0: float = _D["polchinski"]["Lambda0"], m02: float = _D["polchinski"]["m02"],
                 mu2: float = _D["polchinski"]["mu2"]):
        super().__init__(lattice, T)
        self.Lambda0 = _param("Lambda0", Lambda0)
        self.m02 = _param("m02", m02)
        self.mu2 = _param("mu2", mu2)

    def params(self) -> dict:
        return {"T": self.T, "Lambda0": self.Lambda0, "m02": self.m02, "mu2": self.mu2}

    def _u(self, p):
        return (p + self.mu2) / self.Lambda0**2

    def _C(self, p):
        return 1.0 / (p + self.m02)

    def _log_K(self, t, p):
        return -self._u(p) * torch.exp(2 * t)

    def _log_A(self, t, p):
        return -self._u(p) * torch.expm1(2 * t)

    def _Sigma(self, t, p):
        return self._C(p) * torch.exp(self._log_K(t, p)) * -torch.expm1(self._log_A(t, p))

    def _alpha(self, t, p):
        return 2 * self._u(p) * torch.exp(2 * t)

    def _beta2(self, t, p):
        return self._alpha(t, p) * torch.exp(self._log_K(t, p)) * self._C(p)

    def _frozen(self, p):
        return (p + self.mu2) == 0


class RenormalizedPolchinskiScheme(PolchinskiScheme):
    """Variance-preserving Polchinski: the field is measured in units of the reference
    propagator, mode by mode.

    With chi~ = C^(-1/2) phi~ the seed's "renormalized" flow is dchi = -alpha chi dt +
    sqrt(2 alpha) dW, which tends to white noise: A_t = K_t/K_0, Sigma^chi_t = 1 - A_t^2.
    Back in the field's own units (so data, scores and spectra keep one meaning across
    schemes) this is

        alpha = -d/dt log K_t (as Polchinski),  beta^2 = 2 alpha C,
        A_t = K_t/K_0,                           Sigma_t = C (1 - A_t^2),

    so dSigma/dt = -2 alpha Sigma + beta^2 holds and Gaussian data with G = C is stationary:
    A^2 C + C (1 - A^2) = C. The process tends to the free field of mass^2 m02 (the Gaussian
    fixed point). With mu2 = 0 the zero mode is frozen, as for Polchinski.
    """

    name = "renormalized_polchinski"
    default_t_min = _D["renormalized_polchinski"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["renormalized_polchinski"]["T"],
                 Lambda0: float = _D["renormalized_polchinski"]["Lambda0"],
                 m02: float = _D["renormalized_polchinski"]["m02"],
                 mu2: float = _D["renormalized_polchinski"]["mu2"]):
        super().__init__(lattice, T, Lambda0, m02, mu2)

    def _Sigma(self, t, p):
        return self._C(p) * -torch.expm1(2 * self._log_A(t, p))

    def _beta2(self, t, p):
        return 2 * self._alpha(t, p) * self._C(p)


class VPScheme(Scheme):
    """Variance-preserving baseline (DDPM-like), white noise.

    b(t) = beta_min + (t/T)(beta_max - beta_min), B(t) = int_0^t b;  alpha = b/2, beta^2 = b,
    A_t = exp(-B/2), Sigma_t = 1 - A_t^2 = -expm1(-B).
    """

    name = "vp"
    default_t_min = _D["vp"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["vp"]["T"],
                 beta_min: float = _D["vp"]["beta_min"], beta_max: float = _D["vp"]["beta_max"]):
        super().__init__(lattice, T)
        self.beta_min = _param("beta_min", beta_min)
        self.beta_max = _param("beta_max", beta_max)
        check_scheme_params(self.name, self.params())

    def params(self) -> dict:
        return {"T": self.T, "beta_min": self.beta_min, "beta_max": self.beta_max}

    def _b(self, t):
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def _B(self, t):
        return self.beta_min * t + (self.beta_max - self.beta_min) * t * t / (2 * self.T)

    def _log_A(self, t, p):
        return -0.5 * self._B(t) + 0 * p

    def _Sigma(self, t, p):
        return -torch.expm1(-self._B(t)) + 0 * p

    def _alpha(self, t, p):
        return 0.5 * self._b(t) + 0 * p

    def _beta2(self, t, p):
        return self._b(t) + 0 * p


class VEScheme(Scheme):
    """Variance-exploding baseline, white noise: A_t = 1,
    Sigma_t = sigma_min^2 ((sigma_max/sigma_min)^(2t/T) - 1), beta^2 = dSigma/dt, alpha = 0.

    sigma_max^2 must dominate the data spectrum (check :meth:`leftover`); the default 100 suits
    spectra up to ~ 10^2 (chi of 16^2 lattices in the broken phase).
    """

    name = "ve"
    default_t_min = _D["ve"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["ve"]["T"],
                 sigma_min: float = _D["ve"]["sigma_min"], sigma_max: float = _D["ve"]["sigma_max"]):
        super().__init__(lattice, T)
        self.sigma_min = _param("sigma_min", sigma_min)
        self.sigma_max = _param("sigma_max", sigma_max)
        check_scheme_params(self.name, self.params())

    def params(self) -> dict:
        return {"T": self.T, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def _rate(self):
        return 2 * math.log(self.sigma_max / self.sigma_min) / self.T

    def _log_A(self, t, p):
        return torch.zeros_like(p) + 0 * t

    def _Sigma(self, t, p):
        return self.sigma_min**2 * torch.expm1(self._rate() * t) + 0 * p

    def _alpha(self, t, p):
        return torch.zeros_like(p) + 0 * t

    def _beta2(self, t, p):
        return self.sigma_min**2 * self._rate() * torch.exp(self._rate() * t) + 0 * p


SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls
    for cls in (CarossoScheme, PolchinskiScheme, RenormalizedPolchinskiScheme, VPScheme, VEScheme)
}


def build_scheme(name: str, lattice: Lattice, **params) -> Scheme:
    """The scheme registered under ``name`` with keyword ``params`` (e.g. T, mu2, Lambda0)."""
    if name not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {name!r}")
    cls = SCHEMES[name]
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "lattice")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for scheme {name!r}; allowed: {allowed}")
    return cls(lattice, **params)
