"""Redraw the README's phase diagram (docs/figures/phase_diagram.png) from the aggregate CSVs
shipped in benchmarks/results/phase_diagram_n16_32 (no run directory needed):

    python docs/phase_figure.py [benchmarks/results/phase_diagram_n16_32]

The same figure code as ``rgdist aggregate`` (rgdist.campaign.aggregate.figures), fed from
``pd.csv`` (the scanned grid), ``pd_critical.csv`` (the grid-point crossings per source) and
``pd_curve_critical.csv`` (the critical line from the continuous curves).
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from rgdist.analysis.critical import CriticalPoint
from rgdist.analysis.table import Table
from rgdist.campaign.aggregate.figures import phase_diagram_figure
from rgdist.plot.phase import save_figure

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "figures" / "phase_diagram"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(x: str) -> float:
    return float(x) if x not in ("", None) else math.nan


def main(src: str) -> None:
    d = Path(src)
    table = Table.from_csv(d / "pd.csv")
    by_source: dict[str, list] = {}
    for r in _rows(d / "pd_critical.csv"):
        p = CriticalPoint(lam=_f(r["lam"]), m2_c=_f(r["m2_c"]), dm2=_f(r["dm2"]),
                          dm2_stat=_f(r["dm2_stat"]), dm2_sys=_f(r["dm2_sys"]),
                          value=_f(r["value"]), dvalue=_f(r["dvalue"]),
                          observable=r["observable"], method=r["method"], pairs=(),
                          reason=r["reason"], note=r["note"])
        by_source.setdefault(r["source"], []).append(p)
    line = [{"lam": _f(r["lam"]), "m2_c": _f(r["m2_c"]), "dm2": _f(r["dm2"])}
            for r in _rows(d / "pd_curve_critical.csv") if r["reason"] == ""]
    fig = phase_diagram_figure(table, by_source, line)
    png, pdf = save_figure(fig, OUT)
    pdf.unlink(missing_ok=True)
    print(png)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "benchmarks/results/phase_diagram_n16_32"))
