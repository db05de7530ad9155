"""Campaign specification: YAML -> frozen, fully validated dataclasses (schema_version 1).

A campaign file is a mapping of sections (see ``campaigns/default.yaml``)::

    schema_version, name, seed, lattice, theory, grid, scheme, model, train, sample,
    measure, hmc, correct, baseline, checkpoint, output, resources

``correct`` (the Metropolis/reweighting correction) and ``baseline`` (the flow baseline) are
optional and off by default; while off they stay out of ``to_dict()`` and of the point ids
(``baseline`` never enters them), so campaigns without them keep their ids and run dirs.
The former spellings of ``correct`` are bad input: the section ``exact:``
(now ``correct:``) and ``likelihood: exact`` (now ``trace``).

YAML is read with ``yaml.safe_load`` only (duplicate keys are rejected beforehand from the
composed node tree). Every problem raises ``ConfigError(key_path, message)`` with a path such
as ``hmc.n_chains`` or ``grid.m2.linspace[2]``; unknown keys list the allowed ones. Integers,
reals and booleans are distinct (``true`` is not an integer, ``64.0`` is not an integer);
reals must be finite. ``Campaign.to_dict()`` is the canonical resolved configuration (every
default filled in) and ``Campaign.from_dict`` reads it back to an equal campaign.

Modules: the value rules are in rgdist.campaign.rules, the physics sections (lattice,
theory, grid, scheme, model) in rgdist.campaign.sections, the run sections (train, sample,
measure, hmc, correct, checkpoint, output, resources) in rgdist.campaign.run_sections; the
names, parameters and defaults in rgdist.catalog. This module holds the cross-section checks,
the Campaign and the readers, and re-exports the public names of the others.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rgdist.campaign import grid as _grid
from rgdist.campaign.grid import GridPoint, check_int, got, join
from rgdist.campaign.rules import (  # noqa: F401  (re-exported)
    AutoOr,
    Bool,
    Choice,
    Int,
    ListOf,
    Nullable,
    Real,
    Text,
    mapping as _mapping,
    reject_unknown as _reject_unknown,
    require as _require,
)
from rgdist.campaign.run_sections import (  # noqa: F401  (re-exported)
    LAYOUT1_KEY,
    BaselineSpec,
    CheckpointSpec,
    CorrectSpec,
    HMCSpec,
    MeasureSpec,
    OutputSpec,
    ResourcesSpec,
    SampleSpec,
    TrainSpec,
)
from rgdist.campaign.sections import (  # noqa: F401  (re-exported)
    MAX_GRID_POINTS,
    PARAMETRIZATIONS,
    GridSpec,
    LatticeSpec,
    ModelSpec,
    SchemeSpec,
    TheorySpec,
    parse_grid as _parse_grid,
)
from rgdist.catalog import (  # noqa: F401  (re-exported: the schema's name lists)
    CORRECT_METHODS,
    DEVICES,
    DTYPES,
    HMC_INTEGRATORS,
    KL_GRIDS,
    KL_INTEGRATORS,
    LR_SCHEDULES,
    MAX_EXACT_VOLUME,
    MAX_KL_STEPS,
    MAX_LEFTOVER,
    MAX_STRUCTURED_VOLUME,
    MODEL_PARAMS,
    MODELS,
    OBJECTIVES,
    OPERATORS,
    SCHEME_DEFAULTS,
    SCHEMES,
    SOLVERS,
    T_SAMPLERS,
    TIME_GRIDS,
    WEIGHTINGS,
    volume_limit,
)
from rgdist.catalog import DENSITY_METHODS as LIKELIHOODS
from rgdist.catalog import INTEGRATORS as FLOW_INTEGRATORS
from rgdist.coupling_rows import CouplingRows
from rgdist.errors import ConfigError

SCHEMA_VERSION = 1
INTEGRATORS = HMC_INTEGRATORS  # hmc.integrator (FLOW_INTEGRATORS: correct.integrator)
# Sections whose values change a grid point's results (they enter its point_id); "correct"
# enters only when its method is not "off" (see Campaign.context).
RESULT_SECTIONS = ("scheme", "model", "train", "sample", "measure", "hmc")


# --- the campaign ---------------------------------------------------------------------------
_NAME = Text(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
             "a name of at most 64 letters, digits, '_', '.', '-' (starting with a letter or digit)")
TOP_KEYS = ("schema_version", "name", "seed", "lattice", "theory", "grid", "scheme", "model",
            "train", "sample", "measure", "hmc", "correct", "baseline", "checkpoint", "output", "resources")
_SECTIONS = {"theory": TheorySpec, "scheme": SchemeSpec, "model": ModelSpec, "train": TrainSpec,
             "sample": SampleSpec, "measure": MeasureSpec, "hmc": HMCSpec, "correct": CorrectSpec,
             "baseline": BaselineSpec, "checkpoint": CheckpointSpec, "output": OutputSpec, "resources": ResourcesSpec}


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
    correct: CorrectSpec = field(default_factory=CorrectSpec)
    baseline: BaselineSpec = field(default_factory=BaselineSpec)
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
        _check_grid_scope(self, points)
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
        and the correction when its method is not off (so its absence keeps the old ids).

        The correction enters under its layout-1 key "exact" and in its layout-1 spelling
        (CorrectSpec.id_dict: likelihood "trace" hashed as "exact"): renaming the section to
        ``correct`` and the likelihood to ``trace`` changes no point id."""
        out = {"schema_version": self.schema_version, "seed": self.seed}
        out.update((k, getattr(self, k).to_dict()) for k in RESULT_SECTIONS)
        if self.correct.enabled:
            out[LAYOUT1_KEY] = self.correct.id_dict()
        return out

    def context_digest(self) -> str:
        return _grid.digest(self.context())

    def to_dict(self) -> dict:
        """Canonical resolved configuration (JSON-able, every default filled in). ``correct``
        is left out while its method is off (the default), so existing run directories, whose
        campaign.json predates the section, still match."""
        out = {"schema_version": self.schema_version, "name": self.name, "seed": self.seed}
        for key in TOP_KEYS[3:]:
            if key in ("correct", "baseline") and not getattr(self, key).enabled:
                continue
            out[key] = getattr(self, key).to_dict()
        return out

    @classmethod
    def from_dict(cls, mapping, source: str = "<dict>") -> "Campaign":
        return parse_campaign(mapping, source=source)

    def summary(self) -> str:
        return _summary(self)


def _volume(shape) -> int:
    volume = 1
    for n in shape:
        volume *= n
    return volume


def _check_grid_scope(c: Campaign, points) -> None:
    """``model.scope: grid`` trains one model per lattice size on all its points: it needs at
    least two points per size, and (Gaussian-exact models interpolate the measured spectrum)
    couplings forming a product grid of m2 x lam values or rows of constant lam with at least
    two m2 each (rgdist.coupling_rows); scan couplings must lie in the region of the rows."""
    scan = c.sample.couplings
    if c.model.scope != "grid":
        if scan is not None:
            raise ConfigError("sample.couplings", "needs model.scope: grid (a coupling-conditioned "
                                                  "model); with scope: point only the grid points "
                                                  "have a model")
        return
    if scan is not None and not c.correct.enabled:
        raise ConfigError("sample.couplings", "the scan points are corrected by reweighting and "
                                              "need correct.method: reweight, mh or both "
                                              "(got off)")
    by_shape: dict = {}
    for p in points:
        by_shape.setdefault(tuple(p.shape), []).append((p.m2, p.lam))
    for shape, cpl in by_shape.items():
        size = "x".join(map(str, shape))
        if len(cpl) < 2:
            raise ConfigError("model.scope", f"grid trains one model on all points of a lattice "
                                             f"size and needs at least 2 points per size; N = "
                                             f"{size} has {len(cpl)} (use scope: point)")
        rows = CouplingRows(cpl)
        short = [f"lam = {lam:g}" for lam, r in zip(rows.lams, rows.m2s) if r.size < 2]
        if c.model.gaussian_exact and not rows.is_product and short:
            raise ConfigError("model.scope", f"grid with gaussian_exact: true interpolates the "
                                             f"measured spectrum on a product grid of m2 x lam or "
                                             f"along rows of constant lam with at least 2 m2 "
                                             f"values each; the points of N = {size} are neither "
                                             f"({', '.join(short)} has one m2)")
        if scan is None or c.sample.allow_outside:
            continue
        for i, (m, l) in enumerate(scan):
            if not rows.contains(m, l):
                raise ConfigError("sample.couplings", f"coupling {i} (m2={m:g}, lam={l:g}) lies "
                                                      f"outside the trained window of N = {size}: "
                                                      f"{rows.describe()}; move it inside or set "
                                                      f"sample.allow_outside: true")


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
    e = c.correct
    if not e.enabled:
        return
    if e.integrator == "split" and c.model.name != "trace":
        raise ConfigError("correct.integrator", "split needs model.name: trace (a model with an "
                                                f"exact linear part; got {c.model.name})")
    # the volume rule is the library's (rgdist.catalog.volume_limit): an effective-action
    # model without residual net has a closed-form Jacobian (structured: "trace" at any V,
    # "discrete" a dense determinant), an exact-trace model ("trace") an O(V K) divergence
    structured = c.model.name == "effective" and not c.model.residual
    limit = volume_limit(e.likelihood, structured=structured, traced=c.model.name == "trace")
    if limit is None:
        return
    for i, shape in enumerate(c.lattice.N):
        volume = _volume(shape)
        if volume > limit:
            what = ("takes the determinant of a dense V x V step Jacobian" if structured
                    else "forms the full V x V Jacobian")
            raise ConfigError("correct.likelihood", f"{e.likelihood} {what} and needs lattice "
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
    if LAYOUT1_KEY in mapping:
        raise ConfigError(LAYOUT1_KEY, "this section is now called correct (the Metropolis/"
                                       "reweighting correction): rename exact: to correct:")
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
    for key in ("scheme", "model", "train", "sample", "measure", "hmc", "correct",
                *(("baseline",) if c.baseline.enabled else ()), "checkpoint", "output", "resources"):
        if key == "correct" and not c.correct.enabled:
            lines.append(f"  {key:<10} method=off")
            continue
        lines.append(f"  {key:<10} {_fmt(getattr(c, key).to_dict())}")
    lines.append("  points:")
    for p in points[:max_listed]:
        lines.append(f"    #{p.index:<4} {p.point_id}  {p.label()}")
    if len(points) > max_listed:
        lines.append(f"    ... and {len(points) - max_listed} more")
    return "\n".join(lines)
