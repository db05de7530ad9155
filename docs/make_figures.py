"""Build the README's 20x20 figures from the two RG-flow runs:

    python docs/make_figures.py runs/rg_flow_20x20_carosso runs/rg_flow_20x20_polchinski

writes docs/figures/flow_snapshots.png (Polchinski vs Carosso along the forward flow, one
HMC configuration of each run), the forward-vs-learned flow panels of each point and, when
the run has the flow baseline, its figure along its own flow time (results files of layout 1
or 2: read_results gives layout-2 names).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from rgdist.campaign.rundir import results_file
from rgdist.io.results import read_results
from rgdist.plot.flow import plot_flow_snapshots
from rgdist.plot.phase import save_figure

OUT = Path(__file__).resolve().parent / "figures"


def main(run_dirs: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    by_point: dict[float, dict] = {}
    for rd in run_dirs:
        res = read_results(results_file(rd))
        scheme = json.loads(res["attrs"]["campaign"])["scheme"]["name"]
        subprocess.run([sys.executable, "-m", "rgdist", "plot", rd], check=True, capture_output=True)
        for pid, p in res["points"].items():
            m2 = p["attrs"]["m2"]
            a = p["arrays"]
            by_point.setdefault(m2, {})[scheme] = (a["flow/forward/snapshots"], a["flow/forward/t"])
            for kind in ("panels", "baseline"):  # baseline: the flow baseline along tau
                src = Path(rd) / "plots" / f"flow_{pid}_{kind}.png"
                if src.exists():
                    shutil.copy(src, OUT / f"flow_{scheme}_m2{m2:+.2f}_{kind}.png")
    for m2, schemes in by_point.items():
        snaps = {name: np.asarray(s) for name, (s, _) in sorted(schemes.items(), reverse=True)}
        times = {name: t for name, (_, t) in schemes.items()}
        fig = plot_flow_snapshots(snaps, times)
        fig.suptitle(f"20x20, lam = 1, m2 = {m2:g}: an HMC configuration along each forward flow")
        save_figure(fig, OUT / f"flow_snapshots_m2{m2:+.2f}")
        (OUT / f"flow_snapshots_m2{m2:+.2f}.pdf").unlink(missing_ok=True)


if __name__ == "__main__":
    main(sys.argv[1:])
