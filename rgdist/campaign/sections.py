"""The physics sections of a campaign: ``lattice``, ``theory``, ``grid``, ``scheme`` and
``model`` (what is simulated and with which noising scheme and score network). Names,
parameters and defaults come from rgdist.catalog, the table the library classes read too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rgdist.campaign import grid as _grid
from rgdist.campaign.grid import check_int, check_real, got, join
from rgdist.campaign.rules import (
    Bool,
    Choice,
    Int,
    ListOf,
    Nullable,
    Real,
    Section,
    library_check,
    mapping,
    opt,
    owner_hint,
    plain,
    reject_unknown,
    require,
)
from rgdist.catalog import (
    DTYPES,
    MAX_LEFTOVER,
    MAX_TIME_FREQ,
    MODEL_PARAMS,
    MODELS,
    OPERATORS,
    SCHEME_DEFAULTS,
    SCHEMES,
    TIME_FREQ_DEFAULT,
    check_scheme_params,
)
from rgdist.errors import ConfigError

PARAMETRIZATIONS = tuple(_grid.AXES)
MAX_GRID_POINTS = 1_000_000  # hard ceiling for grid.max_points itself


@dataclass(frozen=True)
class TheorySpec(Section):
    KEY: ClassVar[str] = "theory"
    parametrization: str = opt("standard", Choice(*PARAMETRIZATIONS))


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
        given = mapping(raw, path)
        reject_unknown(given, ("N", "d"), path)
        require(given, ("N",), path)
        return cls(**given)

    def to_dict(self) -> dict:
        return {"N": plain(self.N), "d": self.d}


def _parse_shapes(raw, d: int, path: str) -> tuple[tuple[int, ...], ...]:
    def shape(item, p):
        if isinstance(item, (list, tuple)):
            if len(item) != d:
                raise ConfigError(p, f"a per-axis size needs d = {d} entries, got {len(item)}")
            return tuple(check_int(n, join(p, k), lo=2) for k, n in enumerate(item))
        return (check_int(item, p, lo=2),) * d

    if isinstance(raw, dict):
        reject_unknown(raw, ("range",), path)
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


def parse_grid(raw, parametrization: str, path="grid"):
    """The grid section; the key path of every axis value rides along for later messages."""
    given = mapping(raw, path)
    names = _grid.AXES[parametrization]
    other = {n: p for p, ns in _grid.AXES.items() for n in ns if p != parametrization}

    def hint(key):
        if key in other:
            return f"{key} belongs to theory.parametrization: {other[key]}"
        return None

    reject_unknown(given, ("combine", "max_points", *names), path, hint)
    combine = Choice(*_grid.COMBINE)(given.get("combine", "product"), join(path, "combine"))
    max_points = check_int(given.get("max_points", 10000), join(path, "max_points"), lo=1, hi=MAX_GRID_POINTS)
    require(given, names, path)
    axes, paths = [], []
    for name in names:
        vals, vpaths = _grid.parse_axis(given[name], join(path, name), max_points)
        axes.append((name, vals))
        paths.append(vpaths)
    return GridSpec(tuple(axes), combine, max_points, tuple(paths))


_SCHEME_KEYS = ("T", "t_min", "mu2", "Lambda0", "m02", "beta_min", "beta_max", "sigma_min",
                "sigma_max")


@dataclass(frozen=True)
class SchemeSpec:
    """Noising scheme: ``name`` plus its own parameters (others are None).

    carosso: T, mu2; polchinski / renormalized_polchinski: T, Lambda0, m02, mu2;
    vp: T, beta_min, beta_max; ve: T, sigma_min, sigma_max; every scheme: t_min (the
    smallest time used in training and sampling). Defaults and bounds: rgdist.catalog
    (SCHEME_DEFAULTS, SCHEME_BOUNDS, check_scheme_params: the scheme classes' own rules).

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

    def __post_init__(self):
        name = Choice(*SCHEMES)(self.name, "scheme.name")
        defaults = SCHEME_DEFAULTS[name]
        for key in _SCHEME_KEYS:
            value = getattr(self, key)
            if key not in defaults:
                if value is not None:
                    raise ConfigError(f"scheme.{key}", f"is not a parameter of scheme {name}; "
                                                       f"allowed: name, {', '.join(defaults)}")
                continue
            object.__setattr__(self, key, Real()(defaults[key] if value is None else value, f"scheme.{key}"))
        Nullable(Real(lo=0, lo_open=True))(self.max_leftover, "scheme.max_leftover")
        with library_check("scheme"):
            check_scheme_params(name, {k: getattr(self, k) for k in defaults})

    @classmethod
    def parse(cls, raw, path="scheme"):
        given = mapping(raw, path)
        name = Choice(*SCHEMES)(given.get("name", "carosso"), join(path, "name"))
        reject_unknown(given, ("name", *SCHEME_DEFAULTS[name], "max_leftover"), path,
                       owner_hint(SCHEME_DEFAULTS, "scheme"))
        return cls(**given)

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
    (``arch``, see rgdist.catalog.MODEL_PARAMS: the build_model keywords and their defaults),
    readable as attributes (``spec.model.channels``).

    conv: channels, blocks; unet: channels, levels; trace: channels, global_channels, radius,
    filter_rank; effective: operators, residual, residual_channels, residual_blocks.
    ``time_freq`` (every model, default 4): K, the number of Fourier harmonics of the time
    embedding (rgdist.models.layers.TimeEmbedding: sin/cos(pi k t/T) and of the rescaled log t,
    k = 1..K); the finest time feature has period 2T/K. ``zero_mode_head`` (default false;
    needs gaussian_exact, point scope): a magnetization head, the zero-mode score in the zero
    mode's own units (rgdist.models.zero_mode). Both left out of ``to_dict`` at their defaults.
    """

    name: str = "conv"
    gaussian_exact: bool = True
    dtype: str = "float64"
    arch: tuple = ()
    #: "point": one model per grid point; "grid": one coupling-conditioned model per lattice
    #: size, trained data-parallel on every point of that size (rgdist.campaign.gridscope)
    scope: str = "point"
    time_freq: int = TIME_FREQ_DEFAULT
    zero_mode_head: bool = False

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
        Choice("point", "grid")(self.scope, "model.scope")
        Int(lo=0, hi=MAX_TIME_FREQ)(self.time_freq, "model.time_freq")
        Bool()(self.zero_mode_head, "model.zero_mode_head")
        if self.zero_mode_head and not self.gaussian_exact:
            raise ConfigError("model.zero_mode_head", "needs model.gaussian_exact: true (the head "
                                                      "works in the Gaussian zero mode's units)")
        if self.zero_mode_head and self.scope != "point":
            raise ConfigError("model.zero_mode_head", "is offered with model.scope: point only")
        given = dict(self.arch)
        defaults = MODEL_PARAMS[name]
        reject_unknown(given, tuple(defaults), "model")
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
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.arch}
        if self.time_freq != TIME_FREQ_DEFAULT:
            out["n_freq"] = self.time_freq
        if self.zero_mode_head:
            out["zero_mode_head"] = True
        return out

    @classmethod
    def parse(cls, raw, path="model"):
        given = mapping(raw, path)
        name = Choice(*MODELS)(given.get("name", "conv"), join(path, "name"))
        common = ("name", "gaussian_exact", "dtype", "scope", "time_freq", "zero_mode_head")
        reject_unknown(given, (*common, *MODEL_PARAMS[name]), path, owner_hint(MODEL_PARAMS, "model"))
        arch = {k: v for k, v in given.items() if k not in common}
        return cls(**{k: given[k] for k in common if k in given}, arch=tuple(arch.items()))

    def to_dict(self) -> dict:
        """``scope``, ``time_freq`` and ``zero_mode_head`` are left out at their defaults
        ("point", 4, false), so point ids stay as they were."""
        out = {"name": self.name, "gaussian_exact": self.gaussian_exact, "dtype": self.dtype,
               **{k: plain(v) for k, v in self.arch}}
        if self.scope != "point":
            out["scope"] = self.scope
        if self.time_freq != TIME_FREQ_DEFAULT:
            out["time_freq"] = self.time_freq
        if self.zero_mode_head:
            out["zero_mode_head"] = True
        return out
