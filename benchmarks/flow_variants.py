"""Variants of a shipped RG-flow campaign for the seed checks of the README's 20x20 section
(benchmarks/results/rg_flow_20x20_polchinski_seeds.json): the shipped file with another
master seed, a subset of the m2 grid, the flow baseline off and/or another DSM weighting,
zero-mode weight, number of time harmonics of the model or a magnetization head.
Writes the variant as YAML and prints the command that runs it:

    python benchmarks/flow_variants.py --seed 20240621 --m2 -1.27 --no-baseline \
        --out /tmp/polch_seed2.yaml
    python benchmarks/flow_variants.py --seed 20240620 --m2 -1.27 --no-baseline \
        --weighting likelihood --out /tmp/polch_lik0.yaml
    python benchmarks/flow_variants.py --seed 20240620 --m2 -1.27 --no-baseline \
        --zero-mode-weight 40 --out /tmp/polch_zm0.yaml

The output directory of the variant is ``runs/<stem of --out>``. Only keys of the campaign
schema are set, so `rgdist validate` checks the variant like any campaign file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from rgdist.campaign.spec import parse_campaign
from rgdist.catalog import WEIGHTINGS
from rgdist.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "rgdist" / "campaigns"


def variant(raw: dict, *, seed=None, m2=None, baseline=True, weighting=None, zero_mode_weight=None,
            time_freq=None, zero_mode_head=False, out_dir=None) -> dict:
    """``raw`` (a parsed campaign mapping) with the given changes; the input is not modified."""
    c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if seed is not None:
        c["seed"] = seed
    if m2 is not None:
        c["grid"] = {**c["grid"], "m2": list(m2)}
    if not baseline:
        c["baseline"] = {**c.get("baseline", {}), "enabled": False}
    if weighting is not None:
        c["train"] = {**c["train"], "weighting": weighting}
    if zero_mode_weight is not None:
        c["train"] = {**c["train"], "zero_mode_weight": zero_mode_weight}
    if time_freq is not None:
        c["model"] = {**c["model"], "time_freq": time_freq}
    if zero_mode_head:
        c["model"] = {**c["model"], "zero_mode_head": True}
    if out_dir is not None:
        c["output"] = {**c["output"], "dir": out_dir}
    parse_campaign(c)  # refuse what the schema refuses, before anything is written
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", default="rg_flow_20x20_polchinski",
                    help="a shipped campaign's name (rgdist/campaigns/NAME.yaml) or a path")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--m2", type=float, nargs="+", help="the m2 grid (lam and N as shipped)")
    ap.add_argument("--no-baseline", action="store_true", help="turn the flow baseline off")
    ap.add_argument("--weighting", choices=WEIGHTINGS)
    ap.add_argument("--zero-mode-weight", type=float, help="train.zero_mode_weight")
    ap.add_argument("--time-freq", type=int, help="model.time_freq")
    ap.add_argument("--zero-mode-head", action="store_true", help="model.zero_mode_head: true")
    ap.add_argument("--out", required=True, help="where to write the variant (YAML)")
    a = ap.parse_args()
    src = Path(a.campaign)
    if not src.suffix:
        src = SHIPPED / f"{a.campaign}.yaml"
    raw = yaml.safe_load(src.read_text())
    out = Path(a.out)
    try:
        c = variant(raw, seed=a.seed, m2=a.m2, baseline=not a.no_baseline, weighting=a.weighting,
                    zero_mode_weight=a.zero_mode_weight, time_freq=a.time_freq,
                    zero_mode_head=a.zero_mode_head, out_dir=f"runs/{out.stem}")
    except ConfigError as exc:  # nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.write_text(yaml.safe_dump(c, sort_keys=False))
    print(f"wrote {out}; run it with:\n  source scripts/mpienv.sh; mpirun -n 2 python -m mpi4py "
          f"-m rgdist run {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
