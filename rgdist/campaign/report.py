"""The end-of-run report of `rgdist run` / `rgdist resume` (plain text, no computation).

:func:`rgdist.campaign.runner.run_from_cli` returns the report data ``{"results", "campaign",
"aggregate"}``; :func:`format_run_report` writes the per-point results table, the diagnostics
table and the campaign's own aggregate report (rgdist.campaign.aggregate.text).
"""
from __future__ import annotations

import math

from rgdist import exitcodes
from rgdist.campaign.aggregate.text import fmt, format_report

__all__ = ["COLUMNS", "fmt", "deviation", "results_table", "diagnostics_table", "format_run_report",
           "preempted_text"]

COLUMNS = (("chi", "chi"), ("binder", "U"), ("xi2", "xi2"), ("abs_m", "<|M|>"), ("lambda_R", "lam_R"))


def deviation(a, b) -> float:
    """(a - b) / sqrt(ea^2 + eb^2) for [value, err] pairs."""
    s = math.hypot(a[1], b[1])
    return (a[0] - b[0]) / s if s > 0 and math.isfinite(s) else float("nan")


def results_table(results: dict, campaign=None) -> str:
    """One row per point and source; the diffusion rows carry the deviation from HMC in sigma."""
    rows = [("point", "N", "lam", "m2", "source") + tuple(lbl for _, lbl in COLUMNS) + ("max|dev|/sigma",)]
    order = sorted(results.items(), key=lambda kv: kv[1]["attrs"]["index"])
    for pid, r in order:
        a = r["attrs"]
        N = "x".join(str(n) for n in a["shape"])
        est = r["estimates"]
        for src in ("hmc", "diffusion"):
            if src not in est:
                continue
            e = est[src]
            cells = [fmt(*e[k]) if k in e else "-" for k, _ in COLUMNS]
            dev = ""
            if src == "diffusion" and "hmc" in est:
                devs = [abs(deviation(e[k], est["hmc"][k])) for k, _ in COLUMNS if k in e and k in est["hmc"]]
                devs = [d for d in devs if math.isfinite(d)]
                dev = f"{max(devs):.2f}" if devs else "nan"
            rows.append((pid[:8], N, f"{a['lam']:g}", f"{a['m2']:g}", src, *cells, dev))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def diagnostics_table(results: dict, campaign=None) -> str:
    """Per point: the leftover A_T^2 G / Sigma_T at T (max, mean over the noised modes), the
    prior's dynamic range and the sampler's closed-form G2 bias, for the measured spectrum G
    (rgdist.campaign.diagnostics)."""
    head = ("point", "N", "lam", "m2", "leftover max", "mean", "dyn. range", "sampler bias", "limit")
    rows = [head]
    order = sorted(results.items(), key=lambda kv: kv[1]["attrs"]["index"])
    for pid, r in order:
        a, d = r["attrs"], r.get("diagnostics", {})
        if not d:
            continue
        g = lambda k: f"{d[k]:.3g}" if k in d else "-"
        rows.append((pid[:8], "x".join(str(n) for n in a["shape"]), f"{a['lam']:g}", f"{a['m2']:g}",
                     g("leftover/max"), g("leftover/mean"), g("leftover/dynamic_range"),
                     g("sampler_bias/max_discretization"), g("sampler_bias/limit")))
    title = ("diagnostics on the measured spectrum G: leftover A_T^2 G/Sigma_T at T (limit "
             f"scheme.max_leftover = {getattr(getattr(campaign, 'scheme', None), 'max_leftover', '?')}), "
             "dynamic range of the prior, sampler's G2 bias on Gaussian data (limit sample.max_bias)")
    if len(rows) == 1:
        return title + "\n  (none recorded)"
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return title + "\n" + "\n".join(lines)


def format_run_report(report: dict) -> str:
    """The text `rgdist run` prints at the end of a complete run: the results table, the
    diagnostics table and the aggregate report of the run directory."""
    results, campaign = report["results"], report["campaign"]
    return "\n".join([results_table(results, campaign), "", diagnostics_table(results, campaign), "",
                      format_report(report["aggregate"])])


def preempted_text(run_dir) -> str:
    """The note `rgdist run` writes to stderr when the job was pre-empted."""
    return (f"pre-empted: checkpoint written; resume with `rgdist resume {run_dir}` "
            f"(exit code {exitcodes.REQUEUE})")
