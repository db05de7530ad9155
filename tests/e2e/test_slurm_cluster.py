"""The rendered batch script on a real single-node Slurm (scripts/slurm_local.sh).

Pre-emption end to end: the job runs a resumable workload under ``srun``; ``scancel
--signal=USR1 --batch`` reaches the batch shell, whose trap relays it to the ranks; they
checkpoint and exit 75; the script re-queues the job, which restarts with
SLURM_RESTART_COUNT=1, resumes and must finish with the result of an uninterrupted run.

The workload is one parameter (``Workload``): for now a stand-in written to the test's tmp
dir that speaks the ``rgdist run/resume`` verbs; later ``python -m rgdist`` on a tiny campaign.
Slurm is installed by scripts/slurm_local.sh when missing (root + apt); the tests skip with
its reason only when that is impossible.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from rgdist.campaign.slurm import SlurmOptions, render_sbatch

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"

STANDIN = r'''
"""Stand-in for `python -m rgdist`: a resumable counter job over a small grid of points.

run CAMPAIGN --run-dir D [--points i/K] | resume D.  Each step sleeps, then folds the step
index into an order-sensitive 64-bit hash; SIGUSR1/SIGTERM -> finish the step, write the
state, exit 75; a start resumes from the state file; step N writes result.json.
"""
import json, os, signal, sys, time
from pathlib import Path


def write_json(path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def main(argv):
    if argv[0] == "run":
        run_dir = Path(argv[argv.index("--run-dir") + 1])
        points = argv[argv.index("--points") + 1] if "--points" in argv else None
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "campaign.json").exists():
            cfg = json.loads(Path(argv[1]).read_text())
            cfg["points"] = points
            write_json(run_dir / "campaign.json", cfg)
    elif argv[0] == "resume":
        run_dir = Path(argv[1])
    else:
        print(f"standin: unknown verb {argv[0]!r}", file=sys.stderr)
        return 2
    cfg = json.loads((run_dir / "campaign.json").read_text())
    got = []
    for s in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: got.append(signum))
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"step": 0, "acc": 1}
    with open(run_dir / "starts.jsonl", "a") as fh:
        fh.write(json.dumps({"verb": argv[0], "from_step": state["step"],
                             "restart": os.environ.get("SLURM_RESTART_COUNT"),
                             "omp": os.environ.get("OMP_NUM_THREADS")}) + "\n")
    print(f"standin: {argv[0]} from step {state['step']}", flush=True)
    while state["step"] < cfg["n_steps"]:
        if got:
            write_json(state_file, state)
            print(f"standin: signal {got[0]} at step {state['step']}: state written", flush=True)
            return 75
        time.sleep(cfg["step_s"])
        state["acc"] = (state["acc"] * 6364136223846793005 + 1442695040888963407
                        + state["step"]) % 2**64
        state["step"] += 1
        write_json(run_dir / "progress.json", {"step": state["step"]})
    if cfg["points"] is None:
        mine = list(range(cfg["n_points"]))
    else:
        i, k = (int(x) for x in cfg["points"].split("/"))
        mine = [p for p in range(cfg["n_points"]) if p % k == i]
    write_json(run_dir / "result.json", {"acc": state["acc"], "points": mine})
    print("standin: done", flush=True)
    return 0


sys.exit(main(sys.argv[1:]))
'''


@dataclass(frozen=True)
class Workload:
    """What the job runs: ``command`` (the program prefix that takes the rgdist verbs),
    ``campaign`` (its input file) and ``result`` (run dir -> comparable result)."""

    command: tuple[str, ...]
    campaign: Path
    result: Callable[[Path], dict]
    progress: Callable[[Path], int]   # steps done so far (to pre-empt mid-run)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> Workload:
    d = tmp_path_factory.mktemp("standin")
    (d / "standin.py").write_text(STANDIN)
    (d / "campaign.json").write_text(json.dumps({"n_steps": 40, "step_s": 0.1, "n_points": 5}))
    return Workload(command=(sys.executable, str(d / "standin.py")), campaign=d / "campaign.json",
                    result=lambda run_dir: _read_json(run_dir / "result.json"),
                    progress=lambda run_dir: (_read_json(run_dir / "progress.json") or {}).get("step", 0))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node cluster: yields the environment for its clients."""
    d = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SLURM_LOCAL), "start", str(d)], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    if proc.returncode == 3:
        pytest.skip(f"no Slurm here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"slurm_local.sh start failed:\n{proc.stderr}"
    m = re.search(r"^export SLURM_CONF=(\S+)$", proc.stdout, re.M)
    assert m, proc.stdout
    env = dict(os.environ, SLURM_CONF=m.group(1))
    print(f"cluster up in {time.monotonic() - t0:.1f} s")
    yield env
    subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(d)], env=env, timeout=120,
                   stdin=subprocess.DEVNULL)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    t_end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def job_info(env, job_id: str) -> dict:
    """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True,
                         text=True, timeout=30).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def submit(env, script: str, run_dir: Path) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "job.sbatch"
    path.write_text(script)
    proc = subprocess.run(["sbatch", "--parsable", str(path)], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def wait_final(env, job_id: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (lambda i: i if i.get("JobState") in FINAL else None)(job_info(env, job_id)),
                    timeout, f"job {job_id} to end")


def scancel_usr1(env, job_id: str):
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=env, check=True, timeout=30)


def starts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]


def options(**kw) -> SlurmOptions:
    base = dict(job_name="rgdist-e2e", time="00:05:00", max_requeues=2, python=sys.executable)
    base.update(kw)
    return SlurmOptions(**base)


@pytest.fixture(scope="module")
def reference(workload, tmp_path_factory) -> dict:
    """The uninterrupted result, run directly (no Slurm)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run([*workload.command, "run", str(workload.campaign), "--run-dir", str(run_dir)],
                   check=True, timeout=120, capture_output=True)
    res = workload.result(run_dir)
    assert res is not None
    return res


def test_preempt_requeue_resume(cluster, workload, reference, tmp_path):
    t0 = time.monotonic()
    run_dir = tmp_path / "run"
    job = submit(cluster, render_sbatch(options(), str(workload.campaign), str(run_dir),
                                        command=workload.command), run_dir)
    wait_for(lambda: workload.progress(run_dir) >= 3, 60, "the workload to make progress")
    scancel_usr1(cluster, job)
    info = wait_final(cluster, job)
    log = (run_dir / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", (info, log)
    assert info["ExitCode"] == "0:0" and info["Restarts"] == "1", (info, log)
    # two starts: the first from scratch, the second resumed mid-run with SLURM_RESTART_COUNT=1
    s = starts(run_dir)
    assert [x["verb"] for x in s] == ["run", "resume"], s
    assert [x["restart"] for x in s] == ["0", "1"] or [x["restart"] for x in s] == [None, "1"], s
    assert 3 <= s[1]["from_step"] < 40, s
    assert all(x["omp"] == "1" for x in s), s
    assert len(re.findall(r"rgdist-slurm .*: start: job", log)) == 2, log
    for needle in ("got SIGUSR1", "step exited with code 75", f"re-queueing job {job} (restart 1",
                   "step exited with code 0", "restart 1 on"):
        assert needle in log, (needle, log)
    assert workload.result(run_dir) == reference
    print(f"pre-empt/requeue/resume job: {time.monotonic() - t0:.1f} s")


def test_requeue_cap_stops_and_keeps_checkpoint(cluster, workload, reference, tmp_path):
    run_dir = tmp_path / "run"
    job = submit(cluster, render_sbatch(options(max_requeues=0), str(workload.campaign),
                                        str(run_dir), command=workload.command), run_dir)
    wait_for(lambda: workload.progress(run_dir) >= 3, 60, "the workload to make progress")
    scancel_usr1(cluster, job)
    info = wait_final(cluster, job)
    log = (run_dir / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "75:0", (info, log)
    assert info["Restarts"] == "0" and "re-queueing job" not in log
    assert "pre-empted after 0 re-queues (cap 0)" in log, log
    assert workload.result(run_dir) is None          # stopped mid-run, checkpoint kept
    subprocess.run([*workload.command, "resume", str(run_dir)], check=True, timeout=120,
                   capture_output=True)                # resume by hand
    assert workload.result(run_dir) == reference


def test_array_tasks_split_points_and_requeue_alone(cluster, workload, reference, tmp_path):
    run_dir = tmp_path / "run"
    k = 2
    job = submit(cluster, render_sbatch(options(array=True, array_size=k), str(workload.campaign),
                                        str(run_dir), command=workload.command), run_dir)
    task1 = run_dir / "task-1"
    wait_for(lambda: workload.progress(task1) >= 3, 60, "array task 1 to make progress")
    scancel_usr1(cluster, f"{job}_1")
    infos = [wait_final(cluster, f"{job}_{i}") for i in range(k)]
    logs = [(run_dir / f"slurm-{job}_{i}.out").read_text() for i in range(k)]
    assert [i["JobState"] for i in infos] == ["COMPLETED"] * k, (infos, logs)
    assert [i["Restarts"] for i in infos] == ["0", "1"], (infos, logs)
    n_points = json.loads(workload.campaign.read_text())["n_points"]
    got = [workload.result(run_dir / f"task-{i}") for i in range(k)]
    assert [g["points"] for g in got] == [[p for p in range(n_points) if p % k == i] for i in range(k)]
    assert got[0]["acc"] == got[1]["acc"] == reference["acc"]   # task 1 was interrupted
    s1 = starts(task1)
    assert [x["verb"] for x in s1] == ["run", "run"] and s1[1]["from_step"] >= 3, s1


@pytest.mark.slow
def test_time_limit_signal_requeues(cluster, workload, tmp_path):
    """The real trigger: ``--signal=B:USR1@100`` on a 2-minute job fires (Slurm checks about
    every 30 s) before the time limit; the job re-queues and finishes within its cap."""
    t0 = time.monotonic()
    slow = tmp_path / "campaign.json"
    slow.write_text(json.dumps({**json.loads(workload.campaign.read_text()), "n_steps": 600}))
    run_dir = tmp_path / "run"
    job = submit(cluster, render_sbatch(options(time="00:02:00", signal_lead_s=100, max_requeues=4),
                                        str(slow), str(run_dir), command=workload.command), run_dir)
    ref_dir = tmp_path / "ref"   # the uninterrupted run, meanwhile
    ref = subprocess.Popen([*workload.command, "run", str(slow), "--run-dir", str(ref_dir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = wait_final(cluster, job, timeout=480)
        assert ref.wait(timeout=240) == 0
    finally:
        if ref.poll() is None:
            ref.kill()
    log = (run_dir / f"slurm-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, (info, log)
    assert "got SIGUSR1" in log and "TIMEOUT" not in log, log
    assert workload.result(run_dir) == workload.result(ref_dir)
    print(f"time-limit signal job: {time.monotonic() - t0:.1f} s, restarts {info['Restarts']}")
