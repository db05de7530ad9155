"""Campaign specification: YAML -> frozen, fully validated dataclasses (schema_version 1).

A campaign file is a mapping of sections (see ``campaigns/default.yaml``)::

    schema_version, name, seed, lattice, theory, grid, scheme, model, train, sample,
    measure, hmc, exact, checkpoint, output, resources

``exact`` is optional (default ``method: off``); while it is off it stays out of
``to_dict()`` and of the point ids, so campaigns without it keep their ids and run dirs.

YAML is read with ``yaml.safe_load`` only (duplicate keys are rejected beforehand from the
composed node tree). Every problem raises ``ConfigError(key_path, message)`` with a path such
as ``hmc.n_chains`` or ``grid.m2.linspace[2]``; unknown keys list the allowed ones. Integers,
reals and booleans are distinct (``true`` is not an integer, ``64.0`` is not an integer);
reals must be finite. ``Campaign.to_dict()`` is the canonical resolved configuration (every
default filled in) and ``Campaign.from_dict`` reads it back to an equal campaign.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import yaml

from rgdist.campaign import grid as _grid
from rgdist.campaign.grid import GridPoint, check_int, check_real, got, join
from rgdist.errors import ConfigError
from rgdist.catalog import MAX_LEFTOVER
from rgdist.catalog import SCHEME_DEFAULTS as _SCHEME_DEFAULTS

SCHEMA_VERSION = 1
SCHEMES = ("carosso", "polchinski", "renormalized_polchinski", "vp", "ve")
MODELS = ("conv", "unet", "trace", "effective")
SOLVERS = ("euler_maruyama", "exponential", "pc", "heun_ode")
TIME_GRIDS = ("uniform", "log", "snr")
INTEGRATORS = ("leapfrog", "omelyan")
WEIGHTINGS = ("sigma", "likelihood", "none")
T_SAMPLERS = ("uniform", "log", "log_is")
LR_SCHEDULES = ("cosine", "constant")
OPERATORS = ("phi2", "grad2", "phi4", "phi6")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
PARAMETRIZATIONS = tuple(_grid.AXES)
EXACT_METHODS = ("off", "reweight", "mh", "both")
LIKELIHOODS = ("discrete", "exact", "hutchinson")
FLOW_INTEGRATORS = ("heun", "rk4", "split", "exponential", "implicit")  # = rgdist.correct.INTEGRATORS
OBJECTIVES = ("dsm", "reverse_kl", "path")  # = rgdist.train.objectives.OBJECTIVES
KL_GRIDS = ("uniform", "log", "snr")
KL_INTEGRATORS = ("split", "rk4", "heun")
MAX_KL_STEPS = 10_000
# = rgdist.correct.MAX_EXACT_VOLUME (not imported: validation stays free of torch)
MAX_EXACT_VOLUME = 256
MAX_STRUCTURED_VOLUME = 1024  # = rgdist.correct.MAX_STRUCTURED_VOLUME
MAX_GRID_POINTS = 1_000_000  # hard ceiling for grid.max_points itself

# Per-scheme parameters and their defaults: the table rgdist.catalog, which the
# rgdist.rg scheme classes read too (constructor defaults, default_t_min), so the two cannot
# drift apart. t_min is the smallest time of training and sampling, the others are the
# scheme's keyword arguments.
SCHEME_DEFAULTS = _SCHEME_DEFAULTS
# Per-model architecture parameters (keyword arguments of rgdist.models.build_model).
MODEL_PARAMS = {
    "conv": {"channels": 16, "blocks": 2},
    "unet": {"channels": 16, "levels": 2},
    "trace": {"channels": 8, "global_channels": 2, "radius": 1, "filter_rank": 8},
    "effective": {"operators": ("phi2", "grad2", "phi4"), "residual": True,
                  "residual_channels": 16, "residual_blocks": 2},
}
# Sections whose values change a grid point's results (they enter its point_id); "exact"
# enters only when its method is not "off" (see Campaign.context).
RESULT_SECTIONS = ("scheme", "model", "train", "sample", "measure", "hmc")


# --- value rules ---------------------------------------------------------------------------
class Int:
    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi

    def __call__(self, value, path):
        return check_int(value, path, self.lo, self.hi)


class Real:
    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
        self.args = (lo, hi, lo_open, hi_open)

    def __call__(self, value, path):
        return check_real(value, path, *self.args)


class Bool:
    def __call__(self, value, path):
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {got(value)}")
        return value


class Choice:
    def __init__(self, *options):
        self.options = options

    def __call__(self, value, path):
        if not isinstance(value, str) or value not in self.options:
            raise ConfigError(path, f"must be one of {', '.join(self.options)}; got {got(value)}")
        return value


class Text:
    """A non-empty one-line string, optionally matching ``pattern`` (described by ``what``)."""

    def __init__(self, pattern=None, what="a non-empty string"):
        self.pattern, self.what = (re.compile(pattern) if pattern else None), what

    def __call__(self, value, path):
        if not isinstance(value, str) or not value or any(ord(c) < 32 for c in value) or (
                self.pattern is not None and not self.pattern.fullmatch(value)):
            raise ConfigError(path, f"must be {self.what}, got {got(value)}")
        return value


class Nullable:
    def __init__(self, rule):
        self.rule = rule

    def __call__(self, value, path):
        return None if value is None else self.rule(value, path)


class AutoOr:
    def __init__(self, rule):
        self.rule = rule

    def __call__(self, value, path):
        return "auto" if value == "auto" else self.rule(value, path)


class ListOf:
    """A list (returned as a tuple) whose items follow ``rule``; optionally strictly increasing
    or free of duplicates."""

    def __init__(self, rule, min_len=0, unique=False, increasing=False):
        self.rule, self.min_len, self.unique, self.increasing = rule, min_len, unique, increasing

    def __call__(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {got(value)}")
        if len(value) < self.min_len:
            raise ConfigError(path, f"must have at least {self.min_len} item(s)")
        items = tuple(self.rule(v, join(path, i)) for i, v in enumerate(value))
        for i in range(1, len(items)):
            if self.increasing and not items[i] > items[i - 1]:
                raise ConfigError(join(path, i), f"must be strictly increasing, got {items[i - 1]!r} "
                                                 f"then {items[i]!r}")
            if self.unique and items[i] in items[:i]:
                raise ConfigError(join(path, i), f"duplicate item {items[i]!r}")
        return items


def _rel_file_name(value, path):
    """A relative file name inside the run directory: no absolute path, no '..', no '~'."""
    name = Text()(value, path)
    if name.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", name):
        raise ConfigError(path, f"must be a relative file name inside output.dir, not an absolute path: {name!r}")
    if "\\" in name:
        raise ConfigError(path, f"use '/' as the separator, got {name!r}")
    parts = name.split("/")
    if ".." in parts:
        raise ConfigError(path, f"must stay inside output.dir ('..' is not allowed), got {name!r}")
    if any(p in ("", ".") for p in parts):
        raise ConfigError(path, f"must be a plain relative file name (no empty or '.' parts), got {name!r}")
    return name


def opt(default, rule):
    """A section field with its default and its validation rule."""
    return field(default=default, metadata={"rule": rule})


def _mapping(raw, path) -> dict:
    """A mapping with string keys (a null section counts as empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must be a mapping, got {got(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(join(path, key), f"keys must be strings, got {got(key)}")
    return raw


def _reject_unknown(mapping: dict, allowed, path, hint=None) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            extra = f" (did you mean {close[0]}?)" if close else ""
            extra += f" ({hint(key)})" if hint is not None and hint(key) else ""
            raise ConfigError(join(path, key), f"unknown key{extra}; allowed: {', '.join(allowed)}")


def _owner_hint(table: dict, what: str):
    """A hint for _reject_unknown: which other scheme/model has this parameter."""
    def hint(key):
        owners = [name for name, params in table.items() if key in params]
        return f"{key} is a parameter of {what} {', '.join(owners)}" if owners else None
    return hint


def _require(mapping: dict, names, path) -> None:
    for name in names:
        if name not in mapping:
            raise ConfigError(join(path, name), "required key is missing")


def _plain(value):
    """Tuples -> lists, recursively (for JSON)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# --- sections --------------------------------------------------------------------------------
class _Section:
    """Frozen dataclass section validated field by field from the ``rule`` metadata."""

    KEY: ClassVar[str] = ""

    def __post_init__(self):
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                object.__setattr__(self, f.name, rule(getattr(self, f.name), f"{self.KEY}.{f.name}"))
        self._check()

    def _check(self) -> None:
        """Checks between fields of the section."""

    @classmethod
    def parse(cls, raw, path=None):
        path = path or cls.KEY
        mapping = _mapping(raw, path)
        names = [f.name for f in fields(cls)]
        _reject_unknown(mapping, names, path)
        return cls(**mapping)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class TheorySpec(_Section):
    KEY: ClassVar[str] = "theory"
    parametrization: str = opt("standard", Choice(*PARAMETRIZATIONS))


@dataclass(frozen=True)
class TrainSpec(_Section):
    """Training. ``objective``: dsm (denoising score matching on HMC data) | reverse_kl
    (KL(q || p) through the probability-flow ODE with the exact divergence: no data; needs
    model: trace) | path (reverse KL + ``path_weight`` * DSM, the path-aware objective; needs
    model: trace). The reverse-KL term draws ``kl_batch`` (default batch_size) prior samples
    per step and integrates ``kl_steps`` ODE steps on the ``kl_grid`` with ``kl_integrator``
    (split: linear part exact, channels by RK4; rk4; heun). Use the same grid, steps and
    integrator in ``exact`` (sample.grid, exact.n_steps, exact.integrator) so the corrected
    sampler is the one trained.
    """

    KEY: ClassVar[str] = "train"
    steps: int = opt(1000, Int(lo=1))
    batch_size: int = opt(128, Int(lo=1))
    lr: float = opt(2e-3, Real(lo=0, lo_open=True))
    lr_schedule: str = opt("cosine", Choice(*LR_SCHEDULES))
    warmup: int = opt(50, Int(lo=0))
    ema_decay: float = opt(0.999, Real(lo=0, hi=1, hi_open=True))
    grad_clip: float = opt(1.0, Real(lo=0))  # 0: no clipping
    weighting: str = opt("sigma", Choice(*WEIGHTINGS))
    t_sampler: str = opt("uniform", Choice(*T_SAMPLERS))
    max_seconds: float | None = opt(None, Nullable(Real(lo=0, lo_open=True)))
    objective: str = opt("dsm", Choice(*OBJECTIVES))
    kl_steps: int = opt(16, Int(lo=1, hi=MAX_KL_STEPS))
    kl_batch: int | None = opt(None, Nullable(Int(lo=1)))
    kl_grid: str = opt("snr", Choice(*KL_GRIDS))
    kl_integrator: str = opt("split", Choice(*KL_INTEGRATORS))
    path_weight: float = opt(1.0, Real(lo=0))

    _LATER = (("objective", "dsm"), ("kl_steps", 16), ("kl_batch", None), ("kl_grid", "snr"),
              ("kl_integrator", "split"), ("path_weight", 1.0))

    def as_kwargs(self) -> dict:
        """Keyword arguments for rgdist.train.TrainConfig (t_min comes from scheme.t_min)."""
        return super().to_dict()

    def to_dict(self) -> dict:
        # keys added later are omitted at their defaults, so existing point ids stay valid
        out = super().to_dict()
        for key, default in self._LATER:
            if out[key] == default:
                del out[key]
        return out

    def _check(self):
        if self.warmup >= self.steps:
            raise ConfigError("train.warmup", f"must be < train.steps = {self.steps}, got {self.warmup}")


@dataclass(frozen=True)
class SampleSpec(_Section):
    """The reverse sampler. ``max_bias``: the largest relative deviation of any noised mode's
    G2 that the solver's discretization (``solver`` on ``grid`` with ``n_steps``) may cause on
    Gaussian data of the point's measured spectrum with the exact score, computed in closed
    form before training (rgdist.sample.audit; a learned score adds its own error on top).
    "auto" (default) = 0.5 / sqrt(n_samples), half the smallest per-mode standard error of the
    ensemble's G2; null: report only. Beyond it the point stops with a ConfigError (exit 2)
    that names a setting that passes. Left out of ``to_dict`` (and the point ids) at "auto".
    """

    KEY: ClassVar[str] = "sample"
    n_samples: int = opt(1024, Int(lo=1))
    batch_size: int = opt(256, Int(lo=1))
    n_steps: int = opt(100, Int(lo=1))
    solver: str = opt("exponential", Choice(*SOLVERS))
    grid: str = opt("uniform", Choice(*TIME_GRIDS))
    denoise: bool = opt(True, Bool())
    max_bias: float | str | None = opt("auto", Nullable(AutoOr(Real(lo=0, lo_open=True))))

    @property
    def bias_limit(self) -> float | None:
        """``max_bias`` as a number ("auto": 0.5 / sqrt(n_samples)), None when unchecked."""
        if self.max_bias == "auto":
            return 0.5 / self.n_samples ** 0.5
        return self.max_bias

    def to_dict(self) -> dict:
        out = super().to_dict()
        if out["max_bias"] == "auto":  # added later: omitted at its default (same point ids)
            del out["max_bias"]
        return out


@dataclass(frozen=True)
class MeasureSpec(_Section):
    KEY: ClassVar[str] = "measure"
    n_bins: int = opt(32, Int(lo=2))
    record_times: tuple[float, ...] = opt((), ListOf(Real(lo=0), increasing=True))


@dataclass(frozen=True)
class HMCSpec(_Section):
    KEY: ClassVar[str] = "hmc"
    n_chains: int = opt(64, Int(lo=1))
    therm: int = opt(200, Int(lo=0))
    n_traj: int = opt(400, Int(lo=1))
    thin: int = opt(10, Int(lo=1))
    n_steps: int = opt(10, Int(lo=1))
    step_size: float = opt(0.1, Real(lo=0, lo_open=True))
    integrator: str = opt("leapfrog", Choice(*INTEGRATORS))
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


@dataclass(frozen=True)
class ExactSpec(_Section):
    """Exact correction of the learned sampler (rgdist.correct), run after sampling.

    method: off | reweight (self-normalized importance weights w = exp(-S - log q)) | mh
    (independence Metropolis-Hastings) | both. Proposals: ``n_proposals`` draws of the
    probability-flow sampler (``integrator``: heun | exponential | implicit; the last two need
    likelihood "discrete") with ``n_steps`` steps, in chunks of ``batch_size``, with log q by
    ``likelihood`` (discrete: exact density of the map run, V <= 256, or V <= 1024 for an
    effective-action model; exact: O(h^2) continuous formula; hutchinson: ``n_probes``
    probes, any V). ``defensive`` in [0, 1): that fraction of the draws comes from the
    Gaussian of the measured two-point function instead (defensive mixture: bounded weights
    whatever the model; each draw is then evaluated under both, so the flow's map must be
    invertible everywhere: use integrator "implicit"). MH replays the same proposals over
    ``mh_chains`` chains (n_proposals // mh_chains - 1 steps), each step followed by
    ``hmc_trajectories`` HMC trajectories (hybrid; 0 = pure independence MH).
    """

    KEY: ClassVar[str] = "exact"
    method: str = opt("off", Choice(*EXACT_METHODS))
    likelihood: str = opt("discrete", Choice(*LIKELIHOODS))
    n_steps: int = opt(20, Int(lo=1))
    n_proposals: int = opt(1024, Int(lo=2))
    batch_size: int = opt(256, Int(lo=1))
    mh_chains: int = opt(16, Int(lo=1))
    hmc_trajectories: int = opt(0, Int(lo=0))
    n_probes: int = opt(4, Int(lo=1))
    integrator: str = opt("heun", Choice(*FLOW_INTEGRATORS))
    defensive: float = opt(0.0, Real(lo=0.0, hi=1.0, hi_open=True))

    @property
    def enabled(self) -> bool:
        return self.method != "off"

    def to_dict(self) -> dict:
        # keys added later are omitted at their defaults, so existing point ids stay valid
        out = super().to_dict()
        for key, default in (("integrator", "heun"), ("defensive", 0.0)):
            if out[key] == default:
                del out[key]
        return out

    @property
    def mh_steps(self) -> int:
        """MH steps after the chains' first states: n_proposals // mh_chains - 1."""
        return self.n_proposals // self.mh_chains - 1

    def _check(self):
        if self.integrator in ("exponential", "implicit") and self.likelihood != "discrete":
            raise ConfigError("exact.integrator", f"{self.integrator!r} needs exact.likelihood: "
                                                  f"discrete, got {self.likelihood!r}")
        if self.integrator == "split" and self.defensive > 0:
            raise ConfigError("exact.defensive", "a defensive mixture needs the flow's density at "
                                                 "Gaussian draws (the inverse flow), which "
                                                 "exact.integrator: split does not provide: use "
                                                 "integrator rk4 or heun")
        if self.defensive > 0 and self.likelihood == "discrete" and self.integrator != "implicit":
            raise ConfigError("exact.defensive", f"a defensive mixture evaluates the flow's density "
                                                 f"at Gaussian draws, which needs the explicit "
                                                 f"inverse of exact.integrator: implicit (got "
                                                 f"{self.integrator!r})")
        if self.method in ("mh", "both") and self.n_proposals < 3 * self.mh_chains:
            raise ConfigError("exact.n_proposals", f"must be >= 3 * exact.mh_chains = "
                                                   f"{3 * self.mh_chains} (at least 2 MH steps), "
                                                   f"got {self.n_proposals}")


@dataclass(frozen=True)
class CheckpointSpec(_Section):
    KEY: ClassVar[str] = "checkpoint"
    every_steps: int = opt(200, Int(lo=1))
    every_seconds: float | None = opt(300.0, Nullable(Real(lo=0, lo_open=True)))
    keep: int = opt(3, Int(lo=1))


@dataclass(frozen=True)
class OutputSpec(_Section):
    """``dir`` may be relative (the runner resolves it against its working directory)."""

    KEY: ClassVar[str] = "output"
    dir: str = opt("runs/campaign", Text())
    results: str = opt("results.h5", _rel_file_name)
    save_samples: bool = opt(False, Bool())


@dataclass(frozen=True)
class ResourcesSpec(_Section):
    KEY: ClassVar[str] = "resources"
    ranks_per_point: int | str = opt("auto", AutoOr(Int(lo=1)))
    device: str = opt("auto", Choice(*DEVICES))
    threads: int | str = opt("auto", AutoOr(Int(lo=1)))


@dataclass(frozen=True)
class LatticeSpec:
    """Lattice sizes (each N an int, meaning N^d, or a list of d ints) and dimension d."""

    N: tuple[tuple[int, ...], ...]
    d: int = 2

    def __post_init__(self):
        d = check_int(self.d, "lattice.d", lo=1)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "N", _parse_shapes(self.N, d, "lattice.N"))

    @classmethod
    def parse(cls, raw, path="lattice"):
        mapping = _mapping(raw, path)
        _reject_unknown(mapping, ("N", "d"), path)
        _require(mapping, ("N",), path)
        return cls(**mapping)

    def to_dict(self) -> dict:
        return {"N": _plain(self.N), "d": self.d}


def _parse_shapes(raw, d: int, path: str) -> tuple[tuple[int, ...], ...]:
    def shape(item, p):
        if isinstance(item, (list, tuple)):
            if len(item) != d:
                raise ConfigError(p, f"a per-axis size needs d = {d} entries, got {len(item)}")
            return tuple(check_int(n, join(p, k), lo=2) for k, n in enumerate(item))
        return (check_int(item, p, lo=2),) * d

    if isinstance(raw, dict):
        _reject_unknown(raw, ("range",), path)
        rpath = join(path, "range")
        args = raw.get("range")
        if not isinstance(args, list) or len(args) != 3:
            raise ConfigError(rpath, f"must be a list [start, stop, step] of integers, got {got(args)}")
        start, stop, step = (check_int(a, join(rpath, k)) for k, a in enumerate(args))
        if step == 0:
            raise ConfigError(join(rpath, 2), "step must be nonzero")
        sizes = range(start, stop, step)
        if len(sizes) > MAX_GRID_POINTS:
            raise ConfigError(rpath, f"gives more than {MAX_GRID_POINTS} sizes")
        items, paths = list(sizes), [rpath] * len(sizes)
        if not items:
            raise ConfigError(rpath, "is empty: the grid would have no points")
    elif isinstance(raw, (list, tuple)):
        items, paths = list(raw), [join(path, k) for k in range(len(raw))]
        if not items:
            raise ConfigError(path, "empty list: the grid would have no points")
    else:
        items, paths = [raw], [path]
    shapes = []
    for item, p in zip(items, paths):
        s = shape(item, p)
        if s in shapes:
            raise ConfigError(p, f"duplicate lattice size {'x'.join(map(str, s))} "
                                 f"(a per-axis shape is written as a nested list: [[N1, N2]])")
        shapes.append(s)
    return tuple(shapes)


@dataclass(frozen=True)
class GridSpec:
    """Coupling axes (values already expanded) and how they combine."""

    axes: tuple[tuple[str, tuple[float, ...]], ...]
    combine: str = "product"
    max_points: int = 10000
    # key path of every value (for messages); not part of the configuration
    value_paths: tuple | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        Choice(*_grid.COMBINE)(self.combine, "grid.combine")
        check_int(self.max_points, "grid.max_points", lo=1, hi=MAX_GRID_POINTS)
        axes = tuple((name, tuple(check_real(v, f"grid.{name}[{i}]") for i, v in enumerate(vals)))
                     for name, vals in self.axes)
        object.__setattr__(self, "axes", axes)

    def values(self, name: str) -> tuple[float, ...]:
        return dict(self.axes)[name]

    def to_dict(self) -> dict:
        out = {"combine": self.combine, "max_points": self.max_points}
        out.update((name, list(vals)) for name, vals in self.axes)
        return out


def _parse_grid(raw, parametrization: str, path="grid"):
    """The grid section; the key path of every axis value rides along for later messages."""
    mapping = _mapping(raw, path)
    names = _grid.AXES[parametrization]
    other = {n: p for p, ns in _grid.AXES.items() for n in ns if p != parametrization}

    def hint(key):
        if key in other:
            return f"{key} belongs to theory.parametrization: {other[key]}"
        return None

    _reject_unknown(mapping, ("combine", "max_points", *names), path, hint)
    combine = Choice(*_grid.COMBINE)(mapping.get("combine", "product"), join(path, "combine"))
    max_points = check_int(mapping.get("max_points", 10000), join(path, "max_points"), lo=1, hi=MAX_GRID_POINTS)
    _require(mapping, names, path)
    axes, paths = [], []
    for name in names:
        vals, vpaths = _grid.parse_axis(mapping[name], join(path, name), max_points)
        axes.append((name, vals))
        paths.append(vpaths)
    return GridSpec(tuple(axes), combine, max_points, tuple(paths))


@dataclass(frozen=True)
class SchemeSpec:
    """Noising scheme: ``name`` plus its own parameters (others are None).

    carosso: T, mu2; polchinski / renormalized_polchinski: T, Lambda0, m02, mu2;
    vp: T, beta_min, beta_max; ve: T, sigma_min, sigma_max; every scheme: t_min (the
    smallest time used in training and sampling). Defaults: rgdist.catalog.

    ``max_leftover`` (every scheme; default rgdist.catalog.MAX_LEFTOVER = 0.1, null:
    report only): the largest leftover A_T^2 G / Sigma_T over the noised modes that a run
    accepts, G the spectrum measured on the point's HMC data (rgdist.campaign.diagnostics).
    Beyond it the Gaussian prior would stand in for a data law that is still largely the
    data's, so the point stops with a ConfigError (exit code 2) before training. It is left
    out of ``to_dict`` (and the point ids) at its default.
    """

    name: str = "carosso"
    T: float | None = None
    t_min: float | None = None
    mu2: float | None = None
    Lambda0: float | None = None
    m02: float | None = None
    beta_min: float | None = None
    beta_max: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    max_leftover: float | None = MAX_LEFTOVER

    RULES: ClassVar[dict] = {
        "T": Real(lo=0, lo_open=True), "t_min": Real(lo=0, lo_open=True), "mu2": Real(lo=0),
        "Lambda0": Real(lo=0, lo_open=True), "m02": Real(lo=0, lo_open=True),
        "beta_min": Real(lo=0), "beta_max": Real(lo=0, lo_open=True),
        "sigma_min": Real(lo=0, lo_open=True), "sigma_max": Real(lo=0, lo_open=True),
    }

    def __post_init__(self):
        name = Choice(*SCHEMES)(self.name, "scheme.name")
        defaults = SCHEME_DEFAULTS[name]
        for key, rule in self.RULES.items():
            value = getattr(self, key)
            if key not in defaults:
                if value is not None:
                    raise ConfigError(f"scheme.{key}", f"is not a parameter of scheme {name}; "
                                                       f"allowed: name, {', '.join(defaults)}")
                continue
            object.__setattr__(self, key, rule(defaults[key] if value is None else value, f"scheme.{key}"))
        Nullable(Real(lo=0, lo_open=True))(self.max_leftover, "scheme.max_leftover")
        if self.t_min >= self.T:
            raise ConfigError("scheme.t_min", f"must be < scheme.T = {self.T}, got {self.t_min}")
        if name == "vp" and self.beta_max < self.beta_min:
            raise ConfigError("scheme.beta_max", f"must be >= scheme.beta_min = {self.beta_min}")
        if name == "ve" and self.sigma_max <= self.sigma_min:
            raise ConfigError("scheme.sigma_max", f"must be > scheme.sigma_min = {self.sigma_min}")

    @classmethod
    def parse(cls, raw, path="scheme"):
        mapping = _mapping(raw, path)
        name = Choice(*SCHEMES)(mapping.get("name", "carosso"), join(path, "name"))
        _reject_unknown(mapping, ("name", *SCHEME_DEFAULTS[name], "max_leftover"), path,
                        _owner_hint(SCHEME_DEFAULTS, "scheme"))
        return cls(**mapping)

    @property
    def params(self) -> dict:
        """Keyword arguments of ``rgdist.rg.build_scheme`` (all parameters but t_min)."""
        return {k: getattr(self, k) for k in SCHEME_DEFAULTS[self.name] if k != "t_min"}

    def to_dict(self) -> dict:
        out = {"name": self.name, **{k: getattr(self, k) for k in SCHEME_DEFAULTS[self.name]}}
        if self.max_leftover != MAX_LEFTOVER:  # added later: omitted at its default (same ids)
            out["max_leftover"] = self.max_leftover
        return out


@dataclass(frozen=True)
class ModelSpec:
    """Score network: ``name``, ``gaussian_exact``, ``dtype`` and the model's own parameters
    (``arch``, see MODEL_PARAMS), readable as attributes (``spec.model.channels``).

    conv: channels, blocks; unet: channels, levels; effective: operators, residual,
    residual_channels, residual_blocks.
    """

    name: str = "conv"
    gaussian_exact: bool = True
    dtype: str = "float64"
    arch: tuple = ()

    RULES: ClassVar[dict] = {
        "channels": Int(lo=1), "blocks": Int(lo=1), "levels": Int(lo=1), "residual": Bool(),
        "residual_channels": Int(lo=1), "residual_blocks": Int(lo=1),
        "global_channels": Int(lo=0), "radius": Int(lo=0), "filter_rank": Int(lo=1),
        "operators": ListOf(Choice(*OPERATORS), min_len=1, unique=True),
    }

    def __post_init__(self):
        name = Choice(*MODELS)(self.name, "model.name")
        Bool()(self.gaussian_exact, "model.gaussian_exact")
        Choice(*DTYPES)(self.dtype, "model.dtype")
        given = dict(self.arch)
        defaults = MODEL_PARAMS[name]
        _reject_unknown(given, tuple(defaults), "model")
        arch = tuple((k, self.RULES[k](given.get(k, v), f"model.{k}")) for k, v in defaults.items())
        object.__setattr__(self, "arch", arch)

    def __getattr__(self, key):
        if key.startswith("_") or key == "arch":
            raise AttributeError(key)
        try:
            return dict(self.arch)[key]
        except KeyError:
            raise AttributeError(f"model {self.name!r} has no parameter {key!r}") from None

    @property
    def params(self) -> dict:
        """Keyword arguments of ``rgdist.models.build_model`` besides gaussian_exact."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.arch}

    @classmethod
    def parse(cls, raw, path="model"):
        mapping = _mapping(raw, path)
        name = Choice(*MODELS)(mapping.get("name", "conv"), join(path, "name"))
        common = ("name", "gaussian_exact", "dtype")
        _reject_unknown(mapping, (*common, *MODEL_PARAMS[name]), path, _owner_hint(MODEL_PARAMS, "model"))
        arch = {k: v for k, v in mapping.items() if k not in common}
        return cls(**{k: mapping[k] for k in common if k in mapping}, arch=tuple(arch.items()))

    def to_dict(self) -> dict:
        return {"name": self.name, "gaussian_exact": self.gaussian_exact, "dtype": self.dtype,
                **{k: _plain(v) for k, v in self.arch}}


# --- the campaign ---------------------------------------------------------------------------
_NAME = Text(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
             "a name of at most 64 letters, digits, '_', '.', '-' (starting with a letter or digit)")
TOP_KEYS = ("schema_version", "name", "seed", "lattice", "theory", "grid", "scheme", "model",
            "train", "sample", "measure", "hmc", "exact", "checkpoint", "output", "resources")
_SECTIONS = {"theory": TheorySpec, "scheme": SchemeSpec, "model": ModelSpec, "train": TrainSpec,
             "sample": SampleSpec, "measure": MeasureSpec, "hmc": HMCSpec, "exact": ExactSpec,
             "checkpoint": CheckpointSpec, "output": OutputSpec, "resources": ResourcesSpec}


@dataclass(frozen=True)
class Campaign:
    """A validated campaign. Construction expands and checks the whole grid."""

    schema_version: int
    name: str
    seed: int
    lattice: LatticeSpec
    theory: TheorySpec
    grid: GridSpec
    scheme: SchemeSpec
    model: ModelSpec
    train: TrainSpec
    sample: SampleSpec
    measure: MeasureSpec
    hmc: HMCSpec
    checkpoint: CheckpointSpec
    output: OutputSpec
    resources: ResourcesSpec
    exact: ExactSpec = field(default_factory=ExactSpec)
    source: str = field(default="<string>", compare=False, repr=False)

    def __post_init__(self):
        if self.schema_version != SCHEMA_VERSION:
            raise ConfigError("schema_version", f"unsupported version {self.schema_version!r}; "
                                                f"this rgdist reads {SCHEMA_VERSION}")
        _NAME(self.name, "name")
        check_int(self.seed, "seed", lo=0, hi=2**63 - 1)
        _check_cross(self)
        names = _grid.AXES[self.theory.parametrization]
        if tuple(n for n, _ in self.grid.axes) != names:
            raise ConfigError("grid", f"axes must be {', '.join(names)} for theory.parametrization: "
                                      f"{self.theory.parametrization}")
        paths = self.grid.value_paths or [
            tuple(f"grid.{n}[{i}]" for i in range(len(v))) for n, v in self.grid.axes]
        axes = [(vals, p) for (_, vals), p in zip(self.grid.axes, paths)]
        for (n, vals), p in zip(self.grid.axes, paths):
            _grid.check_axis_physics(n, vals, p)
        shape_paths = [f"lattice.N[{k}]" for k in range(len(self.lattice.N))]
        points = _grid.expand_grid(self.lattice.N, shape_paths, self.theory.parametrization, axes,
                                   self.grid.combine, self.grid.max_points, self.context_digest())
        h = self.hmc
        if h.fourier_accel and h.fa_mass2 is None and any(p.m2 <= 0 for p in points):
            raise ConfigError("hmc.fa_mass2", "must be given (a number > 0) with fourier_accel: true "
                                              "when the grid has points with m2 <= 0")
        object.__setattr__(self, "_points", tuple(points))

    # -- views ---------------------------------------------------------------------------------
    def points(self) -> list[GridPoint]:
        """Grid points in their fixed order (N outermost, then the couplings)."""
        return list(self._points)

    def point(self, point_id: str) -> GridPoint:
        for p in self._points:
            if p.point_id == point_id:
                return p
        raise KeyError(f"no grid point with id {point_id!r}")

    def context(self) -> dict:
        """What besides (d, N, m2, lam) changes a point's results: schema, seed, RESULT_SECTIONS
        and ``exact`` when its method is not off (so its absence keeps the old ids)."""
        out = {"schema_version": self.schema_version, "seed": self.seed}
        out.update((k, getattr(self, k).to_dict()) for k in RESULT_SECTIONS)
        if self.exact.enabled:
            out["exact"] = self.exact.to_dict()
        return out

    def context_digest(self) -> str:
        return _grid.digest(self.context())

    def to_dict(self) -> dict:
        """Canonical resolved configuration (JSON-able, every default filled in). ``exact`` is
        left out while its method is off (the default), so existing run directories, whose
        campaign.json predates the section, still match."""
        out = {"schema_version": self.schema_version, "name": self.name, "seed": self.seed}
        for key in TOP_KEYS[3:]:
            if key == "exact" and not self.exact.enabled:
                continue
            out[key] = getattr(self, key).to_dict()
        return out

    @classmethod
    def from_dict(cls, mapping, source: str = "<dict>") -> "Campaign":
        return parse_campaign(mapping, source=source)

    def summary(self) -> str:
        return _summary(self)


def _check_cross(c: Campaign) -> None:
    """Checks between sections."""
    for i, t in enumerate(c.measure.record_times):
        if t > c.scheme.T:
            raise ConfigError(f"measure.record_times[{i}]", f"must be <= scheme.T = {c.scheme.T}, got {t}")
    if c.measure.n_bins > c.sample.n_samples:
        raise ConfigError("measure.n_bins", f"must be <= sample.n_samples = {c.sample.n_samples}, "
                                            f"got {c.measure.n_bins}")
    if c.measure.n_bins > c.hmc.n_configs:
        raise ConfigError("measure.n_bins", f"must be <= the HMC configurations kept "
                                            f"(n_chains * (n_traj // thin) = {c.hmc.n_configs}), "
                                            f"got {c.measure.n_bins}")
    if c.model.name == "unet":
        k = 2 ** c.model.levels
        for i, shape in enumerate(c.lattice.N):
            if any(n % k for n in shape):
                raise ConfigError("model.levels", f"unet with levels = {c.model.levels} needs every "
                                                  f"lattice extent divisible by {k}; lattice.N[{i}] "
                                                  f"is {'x'.join(map(str, shape))}")
    if c.train.objective != "dsm" and c.model.name != "trace":
        raise ConfigError("train.objective", f"{c.train.objective} needs an exact-divergence "
                                             f"model: model.name: trace (got model.name: "
                                             f"{c.model.name}); or use train.objective: dsm")
    e = c.exact
    if e.enabled and e.integrator == "split" and (c.model.name != "trace"
                                                  or e.likelihood == "hutchinson"):
        raise ConfigError("exact.integrator", "split needs model.name: trace and exact.likelihood: "
                                              f"exact or discrete (got {c.model.name}, "
                                              f"{e.likelihood})")
    if e.enabled and e.integrator == "rk4" and e.likelihood == "discrete":
        raise ConfigError("exact.integrator", "rk4 integrates the continuous-time density: use "
                                              "exact.likelihood: exact or hutchinson")
    # an effective-action model without residual net has a closed-form Jacobian: its exact
    # divergence is O(V) (any V) and its discrete density a dense determinant (V <= 1024);
    # an exact-trace model (trace) has an O(V K) exact divergence (any V)
    structured = c.model.name == "effective" and not c.model.residual
    traced = c.model.name == "trace"
    limit = {"discrete": MAX_STRUCTURED_VOLUME if structured else MAX_EXACT_VOLUME,
             "exact": None if structured or traced else MAX_EXACT_VOLUME}.get(e.likelihood)
    if e.enabled and limit is not None:
        for i, shape in enumerate(c.lattice.N):
            volume = 1
            for n in shape:
                volume *= n
            if volume > limit:
                what = ("takes the determinant of a dense V x V step Jacobian" if structured
                        else "forms the full V x V Jacobian")
                raise ConfigError("exact.likelihood", f"{e.likelihood} {what} and needs lattice "
                                                      f"volume V <= {limit}; "
                                                      f"lattice.N[{i}] is {'x'.join(map(str, shape))} "
                                                      f"(V = {volume}): use likelihood: hutchinson"
                                                      + ("" if structured else
                                                         " (or model: effective with residual: false)"))


def _default_name(source: str) -> str:
    if source.startswith("<"):
        return "campaign"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).stem)[:64].lstrip("._-")
    return stem or "campaign"


def parse_campaign(mapping, source: str = "<string>") -> Campaign:
    """Validate a mapping (as from ``yaml.safe_load`` or ``Campaign.to_dict``)."""
    if not isinstance(mapping, dict):
        what = "an empty document" if mapping is None else got(mapping)
        raise ConfigError("", f"the top level of a campaign must be a mapping of sections, got {what}")
    mapping = _mapping(mapping, "")
    _reject_unknown(mapping, TOP_KEYS, "")
    _require(mapping, ("schema_version",), "")
    version = check_int(mapping["schema_version"], "schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError("schema_version", f"unsupported version {version}; this rgdist reads {SCHEMA_VERSION}")
    _require(mapping, ("lattice", "grid"), "")
    name = _NAME(mapping.get("name", _default_name(source)), "name")
    seed = check_int(mapping.get("seed", 0), "seed", lo=0, hi=2**63 - 1)
    lattice = LatticeSpec.parse(mapping["lattice"])
    sections = {}
    for key, cls in _SECTIONS.items():
        raw = mapping.get(key)
        if key == "output":
            raw = _mapping(raw, "output")
            if "dir" not in raw:
                raw = {**raw, "dir": f"runs/{name}"}
        sections[key] = cls.parse(raw)
    grid = _parse_grid(mapping["grid"], sections["theory"].parametrization)
    return Campaign(version, name, seed, lattice, grid=grid, source=source, **sections)


# --- YAML ------------------------------------------------------------------------------------
def _yaml_error(exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    problem = " ".join(str(problem).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError("", f"malformed YAML{where}: {problem}")


def _check_duplicate_keys(root) -> None:
    """Reject a key repeated in one mapping (safe_load would silently keep the last)."""
    stack, seen_nodes = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                label = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                kpath = join(path, label) if label is not None else path
                if label is not None:
                    ident = (key_node.tag, label)
                    if ident in keys:
                        raise ConfigError(kpath, f"duplicate key (lines {keys[ident]} and "
                                                 f"{key_node.start_mark.line + 1})")
                    keys[ident] = key_node.start_mark.line + 1
                stack.append((value_node, kpath))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, join(path, i)) for i, item in enumerate(node.value))


def parse_yaml(text: str, source: str = "<string>") -> Campaign:
    """Validate campaign YAML text."""
    try:
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    except RecursionError:
        raise ConfigError("", "malformed YAML: nested too deeply") from None
    return parse_campaign(data, source=source)


def load_campaign(path) -> Campaign:
    """Read and validate a campaign file; every problem raises ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"campaign file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise ConfigError("", f"campaign file {str(path)!r} is a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"campaign file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read campaign file {str(path)!r}: {exc.strerror}") from None
    return parse_yaml(text, source=str(path))


# --- summary ---------------------------------------------------------------------------------
def _fmt(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def _axis_text(values) -> str:
    if len(values) <= 6:
        return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
    return f"{len(values)} values in [{min(values):.6g}, {max(values):.6g}]"


def _summary(c: Campaign, max_listed: int = 20) -> str:
    points = c.points()
    shapes = ", ".join("x".join(map(str, s)) for s in c.lattice.N)
    axes = f" {c.grid.combine} ".join(f"{n} {_axis_text(v)}" for n, v in c.grid.axes)
    lines = [
        f"campaign {c.name!r} (schema {c.schema_version}, seed {c.seed}, source {c.source}): "
        f"{len(points)} grid point(s)",
        f"  lattice    d={c.lattice.d} N: {shapes}",
        f"  grid       {c.theory.parametrization}: {axes}",
    ]
    for key in ("scheme", "model", "train", "sample", "measure", "hmc", "exact", "checkpoint", "output",
                "resources"):
        if key == "exact" and not c.exact.enabled:
            lines.append(f"  {key:<10} method=off")
            continue
        lines.append(f"  {key:<10} {_fmt(getattr(c, key).to_dict())}")
    lines.append("  points:")
    for p in points[:max_listed]:
        lines.append(f"    #{p.index:<4} {p.point_id}  {p.label()}")
    if len(points) > max_listed:
        lines.append(f"    ... and {len(points) - max_listed} more")
    return "\n".join(lines)
