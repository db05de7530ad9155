"""The coupling grid of a campaign: axes, expansion into grid points, stable point ids.

Axis forms (YAML)::

    m2: -0.9                          one value
    m2: [-1.3, -0.9]                  a list
    m2: {range: [start, stop, step]}  start + k*step, k = 0, 1, ... strictly before stop
    m2: {linspace: [start, stop, num]}  num values, both ends included

Generated values are computed in decimal arithmetic from the numbers as written and rounded
once to the nearest float, so ``{range: [0, 1, 0.1]}`` gives exactly 0.0, 0.1, ..., 0.9.

Points = N x couplings: the lattice sizes are the outermost loop, the coupling axes are
combined as ``product`` (first axis outermost) or ``zip`` (equal lengths, element-wise).
Hopping points (kappa, lam_h) are converted with ``hopping_to_standard``:
m2 = (1 - 2 lam_h)/kappa - 2d, lam = lam_h/kappa^2.

point_id = sha256(canonical JSON of {"physics": {d, N, m2, lam}, "context": C})[:16] where
C is the sha256 hex digest of the canonical JSON of every section that changes the point's
results (given by the caller). Canonical JSON: sorted keys, no spaces, ASCII, no NaN.

Every problem raises ``ConfigError(key_path, message)``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext

from rgdist.errors import ConfigError

AXES = {"standard": ("m2", "lam"), "hopping": ("kappa", "lam_h")}
COMBINE = ("product", "zip")
ID_LENGTH = 16

# PyYAML (YAML 1.1) reads 2e-3 or 1.0e3 (no dot or no exponent sign) as strings.
_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- key paths and typed scalar checks (shared with spec.py) -----------------------------
def join(path: str, key) -> str:
    """Key path of ``key`` below ``path``: ``a.b``, ``a[3]``, or ``a['odd key']``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if isinstance(key, str) and _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "list", dict: "mapping", type(None): "null"}


def got(value) -> str:
    """'integer 5', 'string 'x'', ... for error messages (one line, at most ~60 chars)."""
    r = repr(value)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {r}"


def _bounds_text(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _check_bounds(value, path, what, lo, hi, lo_open, hi_open):
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        raise ConfigError(path, f"must be {what}{_bounds_text(lo, hi, lo_open, hi_open)}, got {value!r}")
    return value


def check_int(value, path, lo=None, hi=None) -> int:
    """A strict integer (booleans and floats such as 64.0 are rejected) within bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer{_bounds_text(lo, hi, False, False)}, got {got(value)}")
    return _check_bounds(value, path, "an integer", lo, hi, False, False)


def check_real(value, path, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    """A finite real number (int or float, not bool) within bounds, returned as float.

    Strings in exponent notation that YAML 1.1 leaves unparsed (``2e-3``) are accepted.
    """
    what = "a finite number"
    if isinstance(value, str) and _EXP_FLOAT.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be {what}{_bounds_text(lo, hi, lo_open, hi_open)}, got {got(value)}")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ConfigError(path, f"must be {what}, got {value!r}")
    return _check_bounds(value, path, what, lo, hi, lo_open, hi_open)


# --- axes --------------------------------------------------------------------------------
def _decimal(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def parse_axis(raw, path: str, max_values: int) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Values of one coupling axis and the key path of each value (for later messages)."""
    if isinstance(raw, dict):
        return _parse_generated(raw, path, max_values)
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(path, "empty list: the grid would have no points")
        if len(raw) > max_values:
            raise ConfigError(path, f"{len(raw)} values, more than grid.max_points = {max_values}")
        paths = tuple(join(path, i) for i in range(len(raw)))
        return tuple(check_real(v, p) for v, p in zip(raw, paths)), paths
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        if isinstance(raw, str) and not _EXP_FLOAT.fullmatch(raw.strip()):
            raise ConfigError(path, "must be a number, a list of numbers, {range: [start, stop, step]} "
                                    f"or {{linspace: [start, stop, num]}}, got {got(raw)}")
        return (check_real(raw, path),), (path,)
    raise ConfigError(path, "must be a number, a list of numbers, {range: [start, stop, step]} "
                            f"or {{linspace: [start, stop, num]}}, got {got(raw)}")


def _parse_generated(raw: dict, path: str, max_values: int):
    kinds = ("range", "linspace")
    for key in raw:
        if key not in kinds:
            raise ConfigError(join(path, key), f"unknown key; allowed here: {', '.join(kinds)}")
    if len(raw) != 1:
        raise ConfigError(path, "give exactly one of range or linspace")
    (kind, args), = raw.items()
    kpath = join(path, kind)
    if not isinstance(args, list) or len(args) != 3:
        form = "[start, stop, step]" if kind == "range" else "[start, stop, num]"
        raise ConfigError(kpath, f"must be a list {form}, got {got(args)}")
    start = check_real(args[0], join(kpath, 0))
    stop = check_real(args[1], join(kpath, 1))
    with localcontext() as ctx:
        ctx.prec = 40
        d0, d1 = _decimal(start), _decimal(stop)
        if kind == "range":
            step = check_real(args[2], join(kpath, 2))
            if step == 0:
                raise ConfigError(join(kpath, 2), "step must be nonzero")
            ds = _decimal(step)
            q = (d1 - d0) / ds
            if q > max_values:
                raise ConfigError(kpath, f"gives more than grid.max_points = {max_values} values")
            n = max(0, int(q.to_integral_value(rounding=ROUND_CEILING)))
            if n == 0:
                raise ConfigError(kpath, f"is empty: no value from {start} in steps of {step} "
                                         f"lies before {stop}")
            values = [float(d0 + k * ds) for k in range(n)]
        else:
            num = check_int(args[2], join(kpath, 2), lo=1)
            if num > max_values:
                raise ConfigError(join(kpath, 2), f"{num} values, more than grid.max_points = {max_values}")
            if num == 1:
                values = [start]
            else:
                values = [float(d0 + (d1 - d0) * k / (num - 1)) for k in range(num)]
                values[-1] = stop
    return tuple(values), (kpath,) * len(values)


def check_axis_physics(name: str, values, paths) -> None:
    """Per-value limits: lam >= 0, lam_h >= 0, kappa > 0."""
    for v, p in zip(values, paths):
        if name in ("lam", "lam_h") and v < 0:
            raise ConfigError(p, f"{name} must be >= 0 (the action is unbounded below), got {v!r}")
        if name == "kappa" and v <= 0:
            raise ConfigError(p, f"kappa must be > 0, got {v!r}")


# --- points ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridPoint:
    """One point of the campaign grid. ``N`` is the lattice shape; kappa, lam_h are set
    only for the hopping parametrization (m2, lam are always the standard couplings)."""

    index: int
    N: tuple[int, ...]
    m2: float
    lam: float
    kappa: float | None
    lam_h: float | None
    point_id: str

    @property
    def shape(self) -> tuple[int, ...]:
        """The lattice shape (same as ``N``)."""
        return self.N

    @property
    def d(self) -> int:
        return len(self.N)

    @property
    def volume(self) -> int:
        return math.prod(self.N)

    @property
    def seed_key(self) -> int:
        """The point id as a 64-bit integer: a SeedSequence key for the point's streams that,
        unlike ``index``, does not change when other points are added to the grid."""
        return int(self.point_id, 16)

    def physics(self) -> dict:
        """The physical parameters that enter the point id: d, N, m2, lam."""
        return physics_dict(self.N, self.m2, self.lam)

    def to_dict(self) -> dict:
        out = {"index": self.index, "point_id": self.point_id, "N": list(self.N),
               "m2": self.m2, "lam": self.lam}
        if self.kappa is not None:
            out.update(kappa=self.kappa, lam_h=self.lam_h)
        return out

    def label(self) -> str:
        shape = "x".join(map(str, self.N))
        text = f"N={shape} m2={self.m2:.6g} lam={self.lam:.6g}"
        if self.kappa is not None:
            text += f" (kappa={self.kappa:.6g} lam_h={self.lam_h:.6g})"
        return text


def shape_tag(shape) -> str:
    """A lattice shape as a name: (8, 8) -> "N8x8"."""
    return "N" + "x".join(map(str, shape))


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(obj) -> str:
    """sha256 hex digest of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


def physics_dict(N, m2: float, lam: float) -> dict:
    return {"d": len(N), "N": [int(n) for n in N], "m2": float(m2), "lam": float(lam)}


def point_id(N, m2: float, lam: float, context_digest: str) -> str:
    """Stable 16-hex-digit id of a point given the digest of its result-relevant context."""
    return digest({"physics": physics_dict(N, m2, lam), "context": context_digest})[:ID_LENGTH]


def count_points(n_shapes: int, lengths, combine: str) -> int:
    """Number of points without building them: n_shapes x (prod or common length)."""
    return n_shapes * (math.prod(lengths) if combine == "product" else lengths[0])


def _couplings(axes, combine: str):
    """Index tuples into the axes, in grid order."""
    if combine == "product":
        return itertools.product(*(range(len(v)) for v, _ in axes))
    return ((i,) * len(axes) for i in range(len(axes[0][0])))


def _standard(m2, lam, m2_path, lam_path):
    if lam == 0 and m2 <= 0:
        raise ConfigError(m2_path, f"m2 = {m2!r} with lam = 0 ({lam_path}): the free action is "
                                   "bounded only for m2 > 0 (use lam > 0 for m2 <= 0)")
    return m2, lam


def _hopping(kappa, lam_h, d, kappa_path, lam_h_path):
    from rgdist.lattice.action import hopping_to_standard  # lazy: keeps `validate` free of torch

    try:
        m2, lam = hopping_to_standard(kappa, lam_h, d)
    except ValueError as exc:
        raise ConfigError(kappa_path, str(exc)) from None
    except ArithmeticError:  # kappa**2 under- or overflows
        m2 = lam = math.inf
    if not (math.isfinite(m2) and math.isfinite(lam)):
        raise ConfigError(kappa_path, f"kappa = {kappa!r}, lam_h = {lam_h!r} give non-finite "
                                      f"couplings m2 = {m2!r}, lam = {lam!r}")
    if lam == 0 and m2 <= 0:
        raise ConfigError(kappa_path, f"kappa = {kappa!r} with lam_h = 0 ({lam_h_path}) gives "
                                      f"m2 = {m2!r} <= 0 at lam = 0: unbounded action (need kappa < 1/(2d))")
    return m2, lam


def expand_grid(shapes, shape_paths, parametrization: str, axes, combine: str, max_points: int,
                context_digest: str, path: str = "grid") -> list[GridPoint]:
    """All grid points in order: shapes outermost, then the combined coupling axes.

    ``axes``: for each name in ``AXES[parametrization]``, a (values, value_paths) pair.
    """
    names = AXES[parametrization]
    lengths = [len(v) for v, _ in axes]
    if combine == "zip" and len(set(lengths)) > 1:
        desc = ", ".join(f"{n}: {k}" for n, k in zip(names, lengths))
        raise ConfigError(path, f"combine: zip needs axes of equal length, got {desc}")
    total = count_points(len(shapes), lengths, combine)
    if total > max_points:
        raise ConfigError(path, f"{total} points (N x couplings), more than grid.max_points = {max_points}")
    d = len(shapes[0])
    couplings = []
    for idx in _couplings(axes, combine):
        (a, a_path), (b, b_path) = ((axes[k][0][i], axes[k][1][i]) for k, i in enumerate(idx))
        if parametrization == "standard":
            m2, lam = _standard(a, b, a_path, b_path)
            couplings.append((m2, lam, None, None))
        else:
            m2, lam = _hopping(a, b, d, a_path, b_path)
            couplings.append((m2, lam, a, b))
    points, seen = [], {}
    for shape, shape_path in zip(shapes, shape_paths):
        for m2, lam, kappa, lam_h in couplings:
            key = (shape, m2, lam)
            if key in seen:
                raise ConfigError(path, f"duplicate grid point N={'x'.join(map(str, shape))} m2={m2!r} "
                                        f"lam={lam!r} (points {seen[key]} and {len(points)})")
            seen[key] = len(points)
            points.append(GridPoint(index=len(points), N=shape, m2=m2, lam=lam, kappa=kappa,
                                    lam_h=lam_h, point_id=point_id(shape, m2, lam, context_digest)))
    return points
