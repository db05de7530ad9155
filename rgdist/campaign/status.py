"""`rgdist status RUN_DIR`: a table of every grid point's stage, progress, last checkpoint
and errors, read from the run directory alone (works on running and on killed campaigns, and
on run directories whose results file has either layout: status only asks whether it exists)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rgdist import exitcodes
from rgdist.campaign.rundir import load_run_dir, results_file


def status_rows(run_dir: Path) -> list[dict]:
    from rgdist.campaign.progress import read_status

    run_dir = Path(run_dir)
    campaign = load_run_dir(run_dir)
    st = read_status(run_dir)
    rows = []
    for p in campaign.points():
        s = st.get(p.point_id, {})
        ptr = run_dir / "points" / p.point_id / "current.json"
        ckpt = None
        if ptr.exists():
            try:
                ckpt = json.loads(ptr.read_text())
            except (OSError, json.JSONDecodeError):
                ckpt = {"error": "unreadable pointer"}
        stage = s.get("stage", "pending")
        rows.append({
            "point": p.point_id, "N": "x".join(map(str, p.shape)), "lam": p.lam, "m2": p.m2,
            "stage": stage,
            "progress": 1.0 if stage == "done" else float(s.get("progress", 0.0)),
            "checkpoint": None if ckpt is None else ckpt.get("tag"),
            "checkpoint_age_s": None if not s.get("last_checkpoint") else time.time() - s["last_checkpoint"],
            "error": s.get("error", ""),
        })
    return rows


def format_status(rows: list[dict], run_dir: Path) -> str:
    from rgdist.io.lock import lock_holder

    holder = lock_holder(run_dir)
    head = f"run directory {run_dir}: " + (f"running (lock held by {holder})" if holder else "not running")
    done = sum(r["stage"] == "done" for r in rows)
    results = results_file(run_dir)
    head += f"; {done}/{len(rows)} points done" + (f"; {results.name} written" if results.exists() else "")
    table = [("point", "N", "lam", "m2", "stage", "progress", "ckpt", "ckpt age", "error")]
    for r in rows:
        age = "-" if r["checkpoint_age_s"] is None else f"{r['checkpoint_age_s']:.0f}s"
        table.append((r["point"], r["N"], f"{r['lam']:g}", f"{r['m2']:g}", r["stage"],
                      f"{100 * r['progress']:.0f}%", "-" if r["checkpoint"] is None else str(r["checkpoint"]),
                      age, r["error"][:60]))
    w = [max(len(str(t[i])) for t in table) for i in range(len(table[0]))]
    lines = ["  ".join(str(c).ljust(x) for c, x in zip(t, w)).rstrip() for t in table]
    lines.insert(1, "  ".join("-" * x for x in w))
    return head + "\n" + "\n".join(lines)


def print_status(run_dir) -> int:
    run_dir = Path(run_dir)
    rows = status_rows(run_dir)
    print(format_status(rows, run_dir))
    return exitcodes.OK
