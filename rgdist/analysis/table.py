"""The point table of a phase-diagram scan: one row per grid point ``(source, N, lam, m2)``.

Data: a :class:`Table` with one row per grid point ``(source, N, lam, m2)`` holding, for each
observable in :data:`OBSERVABLES`, the mean ``obs`` and its error ``obs_err`` (nan if not
measured).  ``xi_over_N`` = xi2 / N is derived on the fly.  Grouping: :meth:`Table.select`,
:meth:`Table.groupby_lam`, :meth:`Table.curve` (one observable at fixed (N, lam) vs m2).
CSV: :meth:`Table.to_csv` / :meth:`Table.from_csv`, :func:`write_rows_csv` (floats with repr
precision, so a table round-trips exactly).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

OBSERVABLES = ("binder", "chi", "chi_conn", "xi2", "abs_m", "m_R", "lambda_R", "Z")
DERIVED = ("xi_over_N",)
SOURCES = ("hmc", "diffusion")
KEY_COLUMNS = ("N", "lam", "m2", "source")

_LAM_RTOL = 1e-9
_LAM_ATOL = 1e-12


def _fmt(value) -> str:
    """CSV cell: ints as ints, floats with repr precision (round-trips exactly)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def write_rows_csv(rows: Sequence[Mapping], path, columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) to ``path`` with a header line ``columns``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_fmt(row.get(c, "")) for c in columns])
    return path


def _as_float(name: str, value) -> float:
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN")):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number (or nan when missing), got {value!r}") from None


class Table:
    """Aggregate table of a scan: one row per ``(source, N, lam, m2)`` grid point.

    Columns: ``N`` (int, square lattices N x N), ``lam``, ``m2``, ``source`` (one of
    :data:`SOURCES`), and for each observable in :data:`OBSERVABLES` the mean ``obs`` and the
    error ``obs_err`` (nan when missing).  Further keys of the input rows (e.g. sample
    counts) are kept as extra columns and written to CSV after the standard ones.
    """

    def __init__(self, columns: Mapping[str, np.ndarray]):
        n = len(columns["N"])
        self._cols = {k: np.asarray(v) for k, v in columns.items()}
        for k, v in self._cols.items():
            if v.shape != (n,):
                raise ValueError(f"column {k!r} has shape {v.shape}, expected ({n},)")

    # --- construction --------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: Iterable[Mapping]) -> "Table":
        """Build from dicts.  An observable may be given as ``obs`` and ``obs_err`` or as a
        ``(mean, err)`` pair under ``obs``; missing observables become nan."""
        rows = list(rows)
        cols: dict[str, list] = {k: [] for k in ("N", "lam", "m2", "source")}
        for o in OBSERVABLES:
            cols[o] = []
            cols[o + "_err"] = []
        extras: dict[str, list] = {}
        std = set(cols)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"rows[{i}] must be a mapping, got {type(row).__name__}")
            for k in ("N", "lam", "m2", "source"):
                if k not in row:
                    raise ValueError(f"rows[{i}] lacks the key {k!r} (required: N, lam, m2, source)")
            N = row["N"]
            try:
                okN = not isinstance(N, (bool, np.bool_)) and float(N) == int(float(N)) >= 2
            except (TypeError, ValueError, OverflowError):
                okN = False
            if not okN:
                raise ValueError(f"rows[{i}]: N must be an integer >= 2, got {N!r}")
            lam = _as_float(f"rows[{i}].lam", row["lam"])
            m2 = _as_float(f"rows[{i}].m2", row["m2"])
            if not math.isfinite(lam) or lam < 0:
                raise ValueError(f"rows[{i}]: lam must be finite and >= 0, got {row['lam']!r}")
            if not math.isfinite(m2):
                raise ValueError(f"rows[{i}]: m2 must be finite, got {row['m2']!r}")
            source = str(row["source"])
            if source not in SOURCES:
                raise ValueError(f"rows[{i}]: source must be one of {SOURCES}, got {source!r}")
            cols["N"].append(int(float(N)))
            cols["lam"].append(lam)
            cols["m2"].append(m2)
            cols["source"].append(source)
            for o in OBSERVABLES:
                val = row.get(o, math.nan)
                if isinstance(val, (tuple, list)):
                    if len(val) != 2 or o + "_err" in row:
                        raise ValueError(
                            f"rows[{i}].{o}: give (mean, err) or {o} and {o}_err, not both")
                    mean, err = val
                else:
                    mean, err = val, row.get(o + "_err", math.nan)
                mean = _as_float(f"rows[{i}].{o}", mean)
                err = _as_float(f"rows[{i}].{o}_err", err)
                if err < 0:
                    raise ValueError(f"rows[{i}].{o}_err must be >= 0 (or nan), got {err}")
                cols[o].append(mean)
                cols[o + "_err"].append(err)
            for k, v in row.items():
                if k in std:
                    continue
                extras.setdefault(k, [None] * i)
            for k in extras:
                extras[k].append(row.get(k))
        out = {
            "N": np.asarray(cols["N"], dtype=np.int64),
            "lam": np.asarray(cols["lam"], dtype=np.float64),
            "m2": np.asarray(cols["m2"], dtype=np.float64),
            "source": np.asarray(cols["source"], dtype=object),
        }
        for o in OBSERVABLES:
            out[o] = np.asarray(cols[o], dtype=np.float64)
            out[o + "_err"] = np.asarray(cols[o + "_err"], dtype=np.float64)
        for k, v in extras.items():
            try:
                out[k] = np.asarray([math.nan if x is None else float(x) for x in v], dtype=np.float64)
            except (TypeError, ValueError):
                out[k] = np.asarray(["" if x is None else str(x) for x in v], dtype=object)
        return cls(out)

    @classmethod
    def from_csv(cls, path) -> "Table":
        """Read a table written by :meth:`to_csv`."""
        with open(path, newline="") as fh:
            return cls.from_rows(list(csv.DictReader(fh)))

    # --- access --------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        std = list(KEY_COLUMNS)
        for o in OBSERVABLES:
            std += [o, o + "_err"]
        return tuple(std + sorted(k for k in self._cols if k not in std))

    def __len__(self) -> int:
        return len(self._cols["N"])

    def __repr__(self) -> str:
        return (f"Table({len(self)} rows, lam={list(self.lams())}, N={list(self.sizes())}, "
                f"sources={list(self.sources())})")

    def column(self, name: str) -> np.ndarray:
        if name not in self._cols:
            raise ValueError(f"unknown column {name!r}; columns are {self.columns}")
        return self._cols[name]

    def rows(self) -> list[dict]:
        cols = self.columns
        out = []
        for i in range(len(self)):
            row = {}
            for c in cols:
                v = self._cols[c][i]
                row[c] = v.item() if isinstance(v, np.generic) else v
            out.append(row)
        return out

    def to_csv(self, path) -> Path:
        """Write all columns with a header (csv module; floats with repr precision)."""
        return write_rows_csv(self.rows(), path, self.columns)

    def lams(self) -> np.ndarray:
        """Distinct lam values, ascending (values equal within 1e-9 relative are merged)."""
        vals = np.unique(self._cols["lam"])
        keep: list[float] = []
        for v in vals:
            if not keep or not np.isclose(v, keep[-1], rtol=_LAM_RTOL, atol=_LAM_ATOL):
                keep.append(float(v))
        return np.asarray(keep)

    def sources(self) -> tuple[str, ...]:
        return tuple(sorted(set(self._cols["source"].tolist())))

    def sizes(self) -> np.ndarray:
        return np.unique(self._cols["N"])

    def select(self, *, lam: float | None = None, N: int | None = None,
               source: str | None = None) -> "Table":
        mask = np.ones(len(self), dtype=bool)
        if lam is not None:
            mask &= np.isclose(self._cols["lam"], float(lam), rtol=_LAM_RTOL, atol=_LAM_ATOL)
        if N is not None:
            mask &= self._cols["N"] == int(N)
        if source is not None:
            if source not in SOURCES:
                raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
            mask &= self._cols["source"] == source
        return Table({k: v[mask] for k, v in self._cols.items()})

    def groupby_lam(self) -> dict[float, "Table"]:
        """{lam: sub-table}, lam ascending."""
        return {lam: self.select(lam=lam) for lam in self.lams()}

    def curve(self, N: int, lam: float, observable: str,
              source: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m2, mean, err) of one observable at fixed (N, lam), sorted by m2.

        ``observable`` is one of :data:`OBSERVABLES` or ``"xi_over_N"`` (= xi2/N).
        Points whose mean is nan are dropped.
        """
        if observable not in OBSERVABLES + DERIVED:
            raise ValueError(f"observable must be one of {OBSERVABLES + DERIVED}, got {observable!r}")
        sub = self.select(lam=lam, N=N, source=resolve_source(self, source))
        m2 = sub._cols["m2"]
        if len(np.unique(m2)) != len(m2):
            raise ValueError(f"duplicate m2 rows at N={N}, lam={lam}: one row per grid point")
        if observable == "xi_over_N":
            mean, err = sub._cols["xi2"] / N, sub._cols["xi2_err"] / N
        else:
            mean, err = sub._cols[observable], sub._cols[observable + "_err"]
        order = np.argsort(m2)
        m2, mean, err = m2[order], mean[order], err[order]
        ok = np.isfinite(mean)
        return m2[ok], mean[ok], err[ok]


def resolve_source(table: Table, source: str | None) -> str | None:
    """The source to analyse: ``source`` itself, or the table's only one when None."""
    if source is not None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        return source
    present = table.sources()
    if len(present) > 1:
        raise ValueError(f"source must be one of {present} for a table that mixes sources")
    return present[0] if present else None

