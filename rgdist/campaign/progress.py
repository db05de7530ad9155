"""Campaign-wide progress: every point's root writes ``status/<id>.json``; rank 0 shows a
tqdm bar (or, when stderr is not a TTY, a one-line record every ``log_every`` seconds)
built from all status files, so the display combines every rank without collectives."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from rgdist import settings
from rgdist.io.atomic import atomic_write_json

STAGE_WEIGHT = {"hmc": 0.0, "train": 1.0, "sample": 2.0, "correct": 3.0, "baseline": 4.0, "done": 5.0}
FULL = STAGE_WEIGHT["done"]


def read_status(run_dir: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((Path(run_dir) / "status").glob("*.json")):
        try:
            out[f.stem] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


class ProgressReporter:
    def __init__(self, run_dir: Path, point_ids: list[str], enabled: bool, log_every: float = 30.0):
        self.run_dir = Path(run_dir)
        self.point_ids = list(point_ids)
        self._last_write: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = None
        mode = settings.progress_mode()
        if not enabled or mode == "off":
            return
        if mode is None:
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.log_every = log_every
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    # --- writers (called by each point's root) -------------------------------------
    def callback(self, point_id: str):
        def report(info: dict) -> None:
            now = time.monotonic()
            final = info.get("done") or "checkpoint" in info or info.get("step", 1) == 0
            if not final and now - self._last_write.get(point_id, 0.0) < 1.0:
                return
            self._last_write[point_id] = now
            path = self.run_dir / "status" / f"{point_id}.json"
            old = {}
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                pass
            rec = {**old, **info, "updated": time.time()}
            if info.get("done"):
                rec["stage"] = "done"
                rec["progress"] = 1.0
            rec.pop("done", None)
            if "checkpoint" in info:
                rec["last_checkpoint"] = time.time()
            atomic_write_json(path, rec)
        return report

    def error(self, point_id: str, message: str) -> None:
        path = self.run_dir / "status" / f"{point_id}.json"
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        atomic_write_json(path, {**old, "error": message, "updated": time.time()})

    def tick(self) -> None:
        pass

    # --- display (rank 0) ---------------------------------------------------------
    def fraction(self) -> tuple[float, int]:
        st = read_status(self.run_dir)
        total, done = 0.0, 0
        for pid in self.point_ids:
            s = st.get(pid, {})
            stage = s.get("stage", "hmc")
            frac = STAGE_WEIGHT.get(stage, 0.0) + (float(s.get("progress", 0.0)) if stage != "done" else 0.0)
            total += min(frac, FULL) / FULL
            done += stage == "done"
        return total, done

    def _loop(self) -> None:
        n = len(self.point_ids)
        bar = None
        if self.mode == "bar":
            try:
                from tqdm import tqdm

                bar = tqdm(total=n, desc="campaign", unit="pt", file=sys.stderr,
                           bar_format="{l_bar}{bar}| {n:.2f}/{total} points [{elapsed}<{remaining}]")
            except ImportError:
                self.mode = "log"
        last_log, shown = 0.0, 0.0
        while not self._stop.wait(1.0):
            frac, done = self.fraction()
            # a NaN rollback of training can take a point's step back: the display never does
            frac = shown = max(shown, frac)
            if bar is not None:
                bar.n = frac
                bar.set_postfix_str(f"done {done}/{n}")
                bar.refresh()
            elif time.monotonic() - last_log >= self.log_every:
                last_log = time.monotonic()
                print(f"[rgdist] progress {frac / max(n, 1):6.1%}  points done {done}/{n}",
                      file=sys.stderr, flush=True)
        if bar is not None:
            frac, done = self.fraction()
            bar.n = frac
            bar.refresh()
            bar.close()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
