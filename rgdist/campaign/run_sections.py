"""The run sections of a campaign: ``train``, ``sample``, ``measure``, ``hmc``, ``correct``
(the optional Metropolis/reweighting correction), ``baseline`` (the optional flow baseline),
``checkpoint``, ``output`` and ``resources`` (how each grid point is computed, checkpointed
and stored). Names and shared defaults come from rgdist.catalog.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rgdist.campaign.rules import (
    AutoOr,
    Bool,
    Choice,
    Int,
    ListOf,
    Nullable,
    Real,
    Section,
    Text,
    later_defaults,
    library_check,
    mapping,
    opt,
    rel_file_name,
)
from rgdist.catalog import (
    CAMPAIGN_BASELINE_DEFAULTS,
    CAMPAIGN_TRAIN_DEFAULTS,
    CORRECT_METHODS,
    DENSITY_METHODS,
    DEVICES,
    DTYPES,
    HMC_INTEGRATORS,
    INTEGRATORS,
    KL_GRIDS,
    KL_INTEGRATORS,
    LR_SCHEDULES,
    MAX_KL_STEPS,
    OBJECTIVES,
    SOLVERS,
    T_SAMPLERS,
    TIME_GRIDS,
    WEIGHTINGS,
    check_density,
)
from rgdist.errors import ConfigError

_T = CAMPAIGN_TRAIN_DEFAULTS
#: most couplings of one sample.couplings scan
MAX_SCAN_COUPLINGS = 1000


def scan_couplings(value, path):
    """``sample.couplings``: null, {m2: axis, lam: axis} (axes as in the grid section,
    combined as a product) or a list of [m2, lam] pairs -> tuple of (m2, lam) pairs."""
    from rgdist.campaign.grid import check_real, parse_axis

    if value is None:
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"m2", "lam"})
        if unknown or set(value) != {"m2", "lam"}:
            raise ConfigError(path, "must be a mapping with exactly the axes m2 and lam (values "
                                    "as in the grid section), or a list of [m2, lam] pairs; got "
                                    f"keys {sorted(value)}")
        m2s, _ = parse_axis(value["m2"], f"{path}.m2", MAX_SCAN_COUPLINGS)
        lams, _ = parse_axis(value["lam"], f"{path}.lam", MAX_SCAN_COUPLINGS)
        pairs = tuple((m, l) for m in m2s for l in lams)
    elif isinstance(value, (list, tuple)) and value:
        pairs = []
        for i, pair in enumerate(value):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"{path}[{i}]", f"must be a pair [m2, lam], got {pair!r}")
            pairs.append((check_real(pair[0], f"{path}[{i}][0]"),
                          check_real(pair[1], f"{path}[{i}][1]")))
        pairs = tuple(pairs)
    else:
        raise ConfigError(path, "must be null, {m2: axis, lam: axis} or a non-empty list of "
                                f"[m2, lam] pairs, got {value!r}")
    if len(pairs) > MAX_SCAN_COUPLINGS:
        raise ConfigError(path, f"{len(pairs)} couplings, more than {MAX_SCAN_COUPLINGS}")
    for i, (m, l) in enumerate(pairs):
        if l < 0:
            raise ConfigError(path, f"lam must be >= 0, got {l} (coupling {i})")
    return tuple(sorted(set(pairs)))


@dataclass(frozen=True)
class TrainSpec(Section):
    """Training. ``objective``: dsm (denoising score matching on HMC data) | reverse_kl
    (KL(q || p) through the probability-flow ODE with the exact divergence: no data; needs
    model: trace) | path (reverse KL + ``path_weight`` * DSM, the path-aware objective; needs
    model: trace). The reverse-KL term draws ``kl_batch`` (default batch_size) prior samples
    per step and integrates ``kl_steps`` ODE steps on the ``kl_grid`` with ``kl_integrator``
    (split: linear part exact, channels by RK4; rk4; heun). Use the same grid, steps and
    integrator in ``correct`` (sample.grid, correct.n_steps, correct.integrator) so the
    corrected sampler is the one trained. ``zero_mode_weight`` (> 0, default 1) multiplies
    the DSM mode weight of the zero mode p = 0 (rgdist.train.dsm: the minimizer is unchanged;
    with weighting sigma the zero mode is otherwise 1/V of the loss). Defaults:
    rgdist.catalog.CAMPAIGN_TRAIN_DEFAULTS.
    """

    KEY: ClassVar[str] = "train"
    LATER: ClassVar[tuple] = ("objective", "kl_steps", "kl_batch", "kl_grid", "kl_integrator",
                              "path_weight", "zero_mode_weight")
    steps: int = opt(_T["steps"], Int(lo=1))
    batch_size: int = opt(_T["batch_size"], Int(lo=1))
    lr: float = opt(_T["lr"], Real(lo=0, lo_open=True))
    lr_schedule: str = opt(_T["lr_schedule"], Choice(*LR_SCHEDULES))
    warmup: int = opt(_T["warmup"], Int(lo=0))
    ema_decay: float = opt(_T["ema_decay"], Real(lo=0, hi=1, hi_open=True))
    grad_clip: float = opt(_T["grad_clip"], Real(lo=0))  # 0: no clipping
    weighting: str = opt(_T["weighting"], Choice(*WEIGHTINGS))
    t_sampler: str = opt(_T["t_sampler"], Choice(*T_SAMPLERS))
    max_seconds: float | None = opt(_T["max_seconds"], Nullable(Real(lo=0, lo_open=True)))
    objective: str = opt(_T["objective"], Choice(*OBJECTIVES))
    kl_steps: int = opt(_T["kl_steps"], Int(lo=1, hi=MAX_KL_STEPS))
    kl_batch: int | None = opt(_T["kl_batch"], Nullable(Int(lo=1)))
    kl_grid: str = opt(_T["kl_grid"], Choice(*KL_GRIDS))
    kl_integrator: str = opt(_T["kl_integrator"], Choice(*KL_INTEGRATORS))
    path_weight: float = opt(_T["path_weight"], Real(lo=0))
    zero_mode_weight: float = opt(_T["zero_mode_weight"], Real(lo=0, lo_open=True))

    def as_kwargs(self) -> dict:
        """Keyword arguments for rgdist.train.TrainConfig (t_min comes from scheme.t_min)."""
        return super().to_dict()

    def to_dict(self) -> dict:
        return later_defaults(super().to_dict(), self)

    def _check(self):
        if self.warmup >= self.steps:
            raise ConfigError("train.warmup", f"must be < train.steps = {self.steps}, got {self.warmup}")


@dataclass(frozen=True)
class SampleSpec(Section):
    """The reverse sampler. ``max_bias``: the largest relative deviation of any noised mode's
    G2 that the solver's discretization (``solver`` on ``grid`` with ``n_steps``) may cause on
    Gaussian data of the point's measured spectrum with the exact score, computed in closed
    form before training (rgdist.sample.audit; a learned score adds its own error on top).
    "auto" (default) = 0.5 / sqrt(n_samples), half the smallest per-mode standard error of the
    ensemble's G2; null: report only. Beyond it the point stops with a ConfigError (exit 2)
    that names a setting that passes. Left out of ``to_dict`` (and the point ids) at "auto".
    """

    KEY: ClassVar[str] = "sample"
    LATER: ClassVar[tuple] = ("max_bias", "couplings", "allow_outside")
    n_samples: int = opt(1024, Int(lo=1))
    batch_size: int = opt(256, Int(lo=1))
    n_steps: int = opt(100, Int(lo=1))
    solver: str = opt("exponential", Choice(*SOLVERS))
    grid: str = opt("uniform", Choice(*TIME_GRIDS))
    denoise: bool = opt(True, Bool())
    max_bias: float | str | None = opt("auto", Nullable(AutoOr(Real(lo=0, lo_open=True))))
    #: model.scope grid: extra couplings sampled (and corrected) with the shared model,
    #: anywhere inside the trained window (outside only with allow_outside: true)
    couplings: tuple | None = opt(None, scan_couplings)
    allow_outside: bool = opt(False, Bool())

    @property
    def bias_limit(self) -> float | None:
        """``max_bias`` as a number ("auto": 0.5 / sqrt(n_samples)), None when unchecked."""
        if self.max_bias == "auto":
            return 0.5 / self.n_samples ** 0.5
        return self.max_bias

    def to_dict(self) -> dict:
        return later_defaults(super().to_dict(), self)


@dataclass(frozen=True)
class MeasureSpec(Section):
    """``series`` (default false): store per kept HMC configuration sum_x phi^2, M, G2 at the
    lowest momenta and the chain index in results.h5 (``points/<id>/series/``), what
    `rgdist aggregate` reweights in m2 into continuous curves. Left out of ``to_dict`` (and
    the point ids) at its default."""

    KEY: ClassVar[str] = "measure"
    LATER: ClassVar[tuple] = ("series",)
    n_bins: int = opt(32, Int(lo=2))
    record_times: tuple[float, ...] = opt((), ListOf(Real(lo=0), increasing=True))
    series: bool = opt(False, Bool())

    def to_dict(self) -> dict:
        return later_defaults(super().to_dict(), self)


@dataclass(frozen=True)
class HMCSpec(Section):
    KEY: ClassVar[str] = "hmc"
    n_chains: int = opt(64, Int(lo=1))
    therm: int = opt(200, Int(lo=0))
    n_traj: int = opt(400, Int(lo=1))
    thin: int = opt(10, Int(lo=1))
    n_steps: int = opt(10, Int(lo=1))
    step_size: float = opt(0.1, Real(lo=0, lo_open=True))
    integrator: str = opt("leapfrog", Choice(*HMC_INTEGRATORS))
    target_accept: float = opt(0.9, Real(lo=0, hi=1, lo_open=True, hi_open=True))
    fourier_accel: bool = opt(False, Bool())
    fa_mass2: float | None = opt(None, Nullable(Real(lo=0, lo_open=True)))  # null: the point's m2
    chains_per_block: int = opt(16, Int(lo=1))
    # per-trajectory step size uniform in step_size (1 -+ jitter), 0 = fixed length;
    # the default = rgdist.lattice.hmc.DEFAULT_JITTER (cures the HMC resonance, see there)
    jitter: float = opt(0.3, Real(lo=0, hi=1, hi_open=True))

    @property
    def n_configs(self) -> int:
        """Configurations kept: n_chains * (n_traj // thin)."""
        return self.n_chains * (self.n_traj // self.thin)

    def _check(self):
        if self.thin > self.n_traj:
            raise ConfigError("hmc.thin", f"must be <= hmc.n_traj = {self.n_traj}, got {self.thin}")
        if self.n_chains % self.chains_per_block:
            raise ConfigError("hmc.chains_per_block", f"must divide hmc.n_chains = {self.n_chains}, "
                                                      f"got {self.chains_per_block}")


#: Former spellings (campaign layout 1): the section was ``exact:``, and its likelihood
#: "trace" was "exact". Both are refused as bad input with the new spelling named; the
#: point ids still hash the layout-1 spelling (CorrectSpec.id_dict).
LAYOUT1_KEY = "exact"
LAYOUT1_LIKELIHOOD = {"trace": "exact"}


@dataclass(frozen=True)
class CorrectSpec(Section):
    """Correction of the learned sampler (rgdist.correct), run after sampling.

    method: off | reweight (self-normalized importance weights w = exp(-S - log q)) | mh
    (independence Metropolis-Hastings) | both. Proposals: ``n_proposals`` draws of the
    probability-flow sampler (``integrator``: heun | rk4 | split | exponential | implicit;
    the last two need likelihood "discrete") with ``n_steps`` steps, in chunks of
    ``batch_size``, with log q by ``likelihood`` (discrete: exact density of the map run,
    V <= 256, or V <= 1024 for an effective-action model without residual net; trace: the
    continuous-time formula with the exact divergence, O(h^2); hutchinson: ``n_probes``
    probes, any V). ``defensive`` in [0, 1): that fraction of the draws comes from the
    Gaussian of the measured two-point function instead (defensive mixture: bounded weights
    whatever the model; each draw is then evaluated under both, so the flow's map must be
    invertible everywhere: use integrator "implicit"). MH replays the same proposals over
    ``mh_chains`` chains (n_proposals // mh_chains - 1 steps), each step followed by
    ``hmc_trajectories`` HMC trajectories (hybrid; 0 = pure independence MH). The pairing
    rules of likelihood and integrator are the library's (rgdist.catalog.check_density).
    """

    KEY: ClassVar[str] = "correct"
    LATER: ClassVar[tuple] = ("integrator", "defensive")
    method: str = opt("off", Choice(*CORRECT_METHODS))
    likelihood: str = opt("discrete", Choice(*DENSITY_METHODS, renamed={"exact": "trace"}))
    n_steps: int = opt(20, Int(lo=1))
    n_proposals: int = opt(1024, Int(lo=2))
    batch_size: int = opt(256, Int(lo=1))
    mh_chains: int = opt(16, Int(lo=1))
    hmc_trajectories: int = opt(0, Int(lo=0))
    n_probes: int = opt(4, Int(lo=1))
    integrator: str = opt("heun", Choice(*INTEGRATORS))
    defensive: float = opt(0.0, Real(lo=0.0, hi=1.0, hi_open=True))

    @property
    def enabled(self) -> bool:
        return self.method != "off"

    def to_dict(self) -> dict:
        # keys added later are omitted at their defaults, so existing point ids stay valid
        return later_defaults(super().to_dict(), self)

    def id_dict(self) -> dict:
        """What the point ids hash: ``to_dict`` in the layout-1 spelling (likelihood "trace"
        written "exact"), so the ids of existing correction campaigns do not change."""
        out = self.to_dict()
        out["likelihood"] = LAYOUT1_LIKELIHOOD.get(out["likelihood"], out["likelihood"])
        return out

    @property
    def mh_steps(self) -> int:
        """MH steps after the chains' first states: n_proposals // mh_chains - 1."""
        return self.n_proposals // self.mh_chains - 1

    def _check(self):
        with library_check("correct", {"method": "likelihood"}):
            check_density(self.likelihood, self.integrator)
        if self.integrator == "split" and self.defensive > 0:
            raise ConfigError("correct.defensive", "a defensive mixture needs the flow's density "
                                                   "at Gaussian draws (the inverse flow), which "
                                                   "correct.integrator: split does not provide: "
                                                   "use integrator rk4 or heun")
        if self.defensive > 0 and self.likelihood == "discrete" and self.integrator != "implicit":
            raise ConfigError("correct.defensive", f"a defensive mixture evaluates the flow's "
                                                   f"density at Gaussian draws, which needs the "
                                                   f"explicit inverse of correct.integrator: "
                                                   f"implicit (got {self.integrator!r})")
        if self.method in ("mh", "both") and self.n_proposals < 3 * self.mh_chains:
            raise ConfigError("correct.n_proposals", f"must be >= 3 * correct.mh_chains = "
                                                     f"{3 * self.mh_chains} (at least 2 MH steps), "
                                                     f"got {self.n_proposals}")



_B = CAMPAIGN_BASELINE_DEFAULTS
_TAUS = ListOf(Real(lo=0, hi=1), min_len=1, increasing=True)


def _tau_grid(value, path):
    """``baseline.tau_grid``: "auto" or a strictly increasing list of times in [0, 1]."""
    if isinstance(value, str) and value != "auto":
        raise ConfigError(path, f'must be "auto" or a list of flow times in [0, 1], got {value!r}')
    return AutoOr(_TAUS)(value, path)


@dataclass(frozen=True)
class BaselineSpec(Section):
    """The flow baseline (rgdist.flow.baseline: the CNF of Gerdes et al., arXiv 2207.00283),
    run after the other stages of every grid point (rgdist.campaign.stages.baseline).

    Trained ``steps`` Adam steps by reverse KL from the point's action alone (``batch_size``
    fresh draws per step, ``lr`` with ``warmup`` and ``lr_schedule`` down to ``lr_min_ratio``
    * lr, ``grad_clip`` on the gradient norm, 0 = none; ``grad_checkpoint`` recomputes each RK4
    step in the backward pass), then ``n_samples`` draws (chunks of ``sample_batch``) with
    their exact log-density, recorded at the flow times ``tau_grid`` (multiples of
    1/``n_steps`` in [0, 1]; "auto": every ceil(n_steps / 10)-th RK4 step and 1). The CNF:
    Gaussian prior of mass ``m0_sq``, ``n_steps`` RK4 steps, ``channels`` local channels of
    stencil ``radius`` (null: the whole lattice), ``global_channels`` magnetization channels,
    momentum filter of rank ``filter_rank``, trained in ``dtype``; the draws and their density
    in ``sample_dtype`` ("auto": ``dtype``; e.g. train in float32 without ``grad_checkpoint``,
    about 2x faster per step, and sample in float64 so that the weights keep float64
    rounding). Defaults: rgdist.catalog.CAMPAIGN_BASELINE_DEFAULTS; ``sample_dtype`` came
    later and stays out of ``to_dict`` at "auto", so existing run directories resume.

    A ``baseline:`` mapping turns it on (``enabled`` defaults to true there); absent (or
    null, or ``enabled: false``) it is off and stays out of ``to_dict``. It changes no other
    result and no point id: its random streams are its own (``"baseline", ...`` below the
    point's seed).
    """

    KEY: ClassVar[str] = "baseline"
    LATER: ClassVar[tuple] = ("sample_dtype",)
    enabled: bool = opt(False, Bool())
    steps: int = opt(_B["steps"], Int(lo=1))
    batch_size: int = opt(_B["batch_size"], Int(lo=1))
    lr: float = opt(_B["lr"], Real(lo=0, lo_open=True))
    lr_schedule: str = opt(_B["lr_schedule"], Choice(*LR_SCHEDULES))
    lr_min_ratio: float = opt(_B["lr_min_ratio"], Real(lo=0, hi=1))
    warmup: int = opt(_B["warmup"], Int(lo=0))
    grad_clip: float = opt(_B["grad_clip"], Real(lo=0))  # 0: no clipping
    grad_checkpoint: bool = opt(_B["grad_checkpoint"], Bool())
    n_steps: int = opt(_B["n_steps"], Int(lo=1, hi=MAX_KL_STEPS))
    m0_sq: float = opt(_B["m0_sq"], Real(lo=0, lo_open=True))
    channels: int = opt(_B["channels"], Int(lo=0))
    global_channels: int = opt(_B["global_channels"], Int(lo=0))
    radius: int | None = opt(_B["radius"], Nullable(Int(lo=0)))
    filter_rank: int = opt(_B["filter_rank"], Int(lo=1))
    dtype: str = opt(_B["dtype"], Choice(*DTYPES))
    n_samples: int = opt(_B["n_samples"], Int(lo=2))
    sample_batch: int = opt(_B["sample_batch"], Int(lo=1))
    tau_grid: tuple | str = opt(_B["tau_grid"], _tau_grid)
    sample_dtype: str = opt(_B["sample_dtype"], Choice("auto", *DTYPES))

    @classmethod
    def parse(cls, raw, path=None):
        if raw is None:  # absent or null: off
            return cls()
        return super().parse({"enabled": True, **mapping(raw, cls.KEY)}, path)

    def to_dict(self) -> dict:
        return later_defaults(super().to_dict(), self)

    @property
    def sampling_dtype(self) -> str:
        """The dtype of the draws and their density (``sample_dtype``, "auto": ``dtype``)."""
        return self.dtype if self.sample_dtype == "auto" else self.sample_dtype

    @property
    def taus(self) -> tuple[float, ...]:
        """The flow times, each exactly i / n_steps."""
        n = self.n_steps
        if self.tau_grid == "auto":
            return tuple(i / n for i in sorted({*range(0, n, -(-n // 10)), n}))
        return tuple(round(t * n) / n for t in self.tau_grid)

    def _check(self):
        if self.warmup >= self.steps:
            raise ConfigError("baseline.warmup", f"must be < baseline.steps = {self.steps}, "
                                                 f"got {self.warmup}")
        if self.tau_grid != "auto":
            n, last = self.n_steps, -1
            for i, t in enumerate(self.tau_grid):
                if abs(round(t * n) - t * n) > 1e-9 * n or round(t * n) <= last:
                    raise ConfigError(f"baseline.tau_grid[{i}]", f"must be a multiple of "
                                      f"1/baseline.n_steps = 1/{n} (an RK4 step), each once; "
                                      f"got {t!r}")
                last = round(t * n)


@dataclass(frozen=True)
class CheckpointSpec(Section):
    KEY: ClassVar[str] = "checkpoint"
    every_steps: int = opt(200, Int(lo=1))
    every_seconds: float | None = opt(300.0, Nullable(Real(lo=0, lo_open=True)))
    keep: int = opt(3, Int(lo=1))


@dataclass(frozen=True)
class OutputSpec(Section):
    """``dir`` may be relative (the runner resolves it against its working directory)."""

    KEY: ClassVar[str] = "output"
    dir: str = opt("runs/campaign", Text())
    results: str = opt("results.h5", rel_file_name)
    save_samples: bool = opt(False, Bool())


@dataclass(frozen=True)
class ResourcesSpec(Section):
    KEY: ClassVar[str] = "resources"
    ranks_per_point: int | str = opt("auto", AutoOr(Int(lo=1)))
    device: str = opt("auto", Choice(*DEVICES))
    threads: int | str = opt("auto", AutoOr(Int(lo=1)))
