"""The rendered batch script on a real single-node Slurm (scripts/slurm_local.sh).

Pre-emption end to end with the real runner: the job rendered by ``render_sbatch`` runs
``python -m rgdist run`` on a tiny campaign as 2 MPI ranks under ``srun`` (pmix); once
training has started, ``scancel --signal=USR1 --batch`` reaches the batch shell, whose trap
relays the signal to the ranks; every rank finishes its step, checkpoints and exits 75; the
script re-queues the job, which restarts with SLURM_RESTART_COUNT=1, runs ``rgdist resume``
and must write a results file bitwise identical (``content_digest``) to the same campaign
run uninterrupted and serially without Slurm (the runner does not depend on the rank count).

Not slow: srun gives 2 MPI ranks with parallel h5py; that pre-emption on 2 grid points (2
groups of one rank); the requeue cap and a job array with a fast stand-in program that speaks
the same verbs. Slow: the pre-emption of one point shared by 2 ranks (one sub-communicator
of 2), a job array of the real runner, and the time-limit signal (stand-in).

Slurm is installed by scripts/slurm_local.sh when missing (root + apt); the tests skip with
its reason only when that is impossible. The daemons stop in the fixture's finalizer, and
(``--stop-with``) when the pytest process dies without running it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from rgdist import exitcodes
from rgdist.campaign.progress import read_status
from rgdist.campaign.slurm import SlurmOptions, render_sbatch

from campaign_util import digest, env as rgdist_env, write_tiny

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"
#: the python of the jobs: this interpreter (CI and here: <repo>/.venv/bin/python)
PYTHON = sys.executable
#: the tiny campaign of the real-runner tests: long enough training that the pre-emption
#: signal, sent once training runs, lands mid-campaign; checkpoints every 25 steps
TRAIN_STEPS, EVERY = 100, 25
TINY_GRID = "grid: {m2: [-0.7, -0.4], lam: [0.5, 1.0]}"
TWO_POINTS = "grid: {m2: [-0.7, -0.4], lam: [1.0]}"
ONE_POINT = "grid: {m2: [-0.7], lam: [1.0]}"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "PREEMPTED", "DEADLINE"}


# --- the cluster ------------------------------------------------------------------------
def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    """The first truthy ``predicate()``; AssertionError after ``timeout`` seconds."""
    t_end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


@dataclass
class Cluster:
    """Clients of the test cluster: ``env`` (SLURM_CONF, no inherited SLURM_* job variables,
    OMP_NUM_THREADS=1, PYTHONPATH=repo, no RGDIST_NO_MPI) and the jobs submitted so far."""

    env: dict
    jobs: list = field(default_factory=list)

    def submit(self, script: str, run_dir: Path) -> str:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "job.sbatch"
        path.write_text(script)
        proc = subprocess.run(["sbatch", "--parsable", str(path)], env=self.env,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        job = proc.stdout.strip().split(";")[0]
        self.jobs.append(job)
        return job

    def info(self, job: str) -> dict:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = subprocess.run(["scontrol", "show", "job", "-o", job], env=self.env,
                             capture_output=True, text=True, timeout=30).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait_final(self, job: str, timeout: float = 120) -> dict:
        def final():
            i = self.info(job)
            return i if i.get("JobState") in FINAL else None
        return wait_for(final, timeout, f"job {job} to end", poll=0.5)

    def usr1(self, job: str) -> None:
        """SIGUSR1 to the batch shell only (as ``--signal=B:USR1@lead`` does), at once."""
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=self.env, check=True,
                       timeout=30)

    def cancel_live(self) -> None:
        """Cancel this test's jobs that are still queued or running; wait (bounded) for them."""
        live = [j for j in self.jobs if self.info(j).get("JobState") not in FINAL | {None}]
        if live:
            subprocess.run(["scancel", *live], env=self.env, timeout=30)
            for j in live:
                try:
                    self.wait_final(j, timeout=60)
                except AssertionError:
                    pass


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory):
    """A running single-node cluster for this module: yields its client environment."""
    d = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SLURM_LOCAL), "start", str(d), "--stop-with", str(os.getpid())],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if proc.returncode == 3:
        pytest.skip(f"no Slurm here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"slurm_local.sh start failed:\n{proc.stderr}"
    m = re.search(r"^export SLURM_CONF=(\S+)$", proc.stdout, re.M)
    assert m, proc.stdout
    env = {k: v for k, v in rgdist_env().items()
           if not k.startswith("SLURM_") and k not in ("RGDIST_NO_MPI", "RGDIST_FAULT")}
    env["SLURM_CONF"] = m.group(1)
    print(f"cluster up in {time.monotonic() - t0:.1f} s")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(d)], env=env, timeout=120,
                       stdin=subprocess.DEVNULL)


@pytest.fixture
def cluster(cluster_env):
    c = Cluster(env=cluster_env)
    try:
        yield c
    finally:
        c.cancel_live()   # a failed test leaves no job holding the CPUs


def options(**kw) -> SlurmOptions:
    base = dict(job_name="rgdist-e2e", time="00:10:00", max_requeues=2, python=PYTHON)
    base.update(kw)
    return SlurmOptions(**base)


def slurm_log(run_dir: Path, job: str) -> str:
    path = run_dir / f"slurm-{job}.out"
    return path.read_text() if path.exists() else f"(no {path.name})"


# --- the real runner -----------------------------------------------------------------------
def rank_logs(run_dir: Path) -> list[str]:
    return [p.read_text() for p in sorted((run_dir / "logs").glob("rank-*.log"))]


def report(run_dir: Path, job: str, log_dir: Path | None = None) -> str:
    """The job's log (in ``log_dir``, default ``run_dir``) and rank logs, for messages."""
    parts = [slurm_log(run_dir if log_dir is None else log_dir, job)[-4000:]]
    parts += [t[-1500:] for t in rank_logs(run_dir)]
    return "\n----\n".join(parts)


def training(run_dir: Path, n: int) -> bool:
    """True once ``n`` grid points are in the training stage (status/*.json)."""
    return sum(s.get("stage") == "train" for s in read_status(run_dir).values()) >= n


def digest_diff(got: dict, ref: dict) -> list[str]:
    return sorted(k for k in got.keys() | ref.keys() if got.get(k) != ref.get(k))


def tiny_campaign(d: Path, grid: str) -> Path:
    """The tiny campaign of campaign_util with its grid line replaced by ``grid``."""
    camp = write_tiny(d, train_steps=TRAIN_STEPS, every=EVERY)
    text = camp.read_text()
    assert TINY_GRID in text, text
    camp.write_text(text.replace(TINY_GRID, grid))
    return camp


class Reference:
    """A campaign run uninterrupted, serially, without Slurm or MPI, in the background:
    ``start()`` launches it (a test starts it while its job waits to be re-queued, when the
    CPUs are idle), ``digest()`` waits for it and returns its results' content digest."""

    def __init__(self, campaign: Path, cwd: Path):
        self.campaign, self.cwd = campaign, cwd
        self.proc: subprocess.Popen | None = None
        self._digest: dict | None = None
        self.seconds = float("nan")

    def start(self) -> None:
        if self.proc is None:
            self._t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "rgdist", "run", str(self.campaign), "--run-dir", "ref"],
                cwd=self.cwd, env=rgdist_env(RGDIST_NO_MPI=1), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)

    def digest(self) -> dict:
        if self._digest is None:
            self.start()
            _, err = self.proc.communicate(timeout=300)
            self.seconds = time.monotonic() - self._t0
            assert self.proc.returncode == 0, err[-3000:]
            self._digest = digest(self.cwd / "ref")
        return self._digest

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny campaign on 2 grid points and its (lazily run) serial reference."""
    d = tmp_path_factory.mktemp("tiny")
    ref = Reference(tiny_campaign(d, TWO_POINTS), d)
    try:
        yield ref
    finally:
        ref.stop()


def test_srun_gives_two_mpi_ranks_with_parallel_hdf5(cluster):
    """What the rendered step line sees: ``srun`` (pmix) starts 2 ranks of one MPI world,
    each with the MPI-enabled h5py (so results.h5 is written with the mpio driver)."""
    proc = subprocess.run(["srun", "--label", "--ntasks=2", "--cpus-per-task=1", "--time=2", PYTHON,
                           "-m", "rgdist", "check-env", "--json"], env=cluster.env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_task: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():   # "TASK: text" (--label), the tasks interleaved
        task, _, rest = line.partition(": ")
        by_task.setdefault(task.strip(), []).append(rest)
    assert sorted(by_task) == ["0", "1"], proc.stdout
    for lines in by_task.values():
        doc = json.loads("\n".join(lines))
        assert doc["mpi_available"] is True and doc["mpi_world_size"] == 2, doc
        assert doc["h5py_mpi"] is True, ("h5py is not built against parallel HDF5", doc)
        assert doc["OMP_NUM_THREADS"] == "1" and doc["torch_threads"] == 1, doc


def preempt_and_finish(cluster: Cluster, run_dir: Path, job: str, n_training: int,
                       meanwhile: Callable[[], None] = lambda: None) -> dict:
    """Wait until ``n_training`` points train, send SIGUSR1, call ``meanwhile()``, wait for
    the re-queue and the end; returns the final job info (with the phase times)."""
    t0 = time.monotonic()
    wait_for(lambda: training(run_dir, n_training) or cluster.info(job).get("JobState") in FINAL,
             180, "training to start")
    assert training(run_dir, n_training), report(run_dir, job)
    t_sig = time.monotonic()
    cluster.usr1(job)
    meanwhile()
    wait_for(lambda: cluster.info(job).get("Restarts", "0") != "0"
             or cluster.info(job).get("JobState") in FINAL, 120, "the re-queue")
    t_req = time.monotonic()
    wait_for(lambda: cluster.info(job).get("JobState") == "RUNNING"
             or cluster.info(job).get("JobState") in FINAL, 120, "the restart", poll=0.5)
    t_run = time.monotonic()
    info = cluster.wait_final(job, timeout=300)
    t_end = time.monotonic()
    info["_times"] = (f"to training {t_sig - t0:.1f} s, signal to re-queue {t_req - t_sig:.1f} s, "
                      f"re-queue to restart {t_run - t_req:.1f} s, restart to end {t_end - t_run:.1f} s")
    return info


def check_requeued_once(info: dict, log: str, job: str, rep: str) -> None:
    assert info["JobState"] == "COMPLETED", (info, rep)
    assert info["ExitCode"] == "0:0" and info["Restarts"] == "1", (info, rep)
    assert re.findall(r"rgdist-slurm .*: start: job (\d+) restart (\d)", log) == [(job, "0"), (job, "1")], rep
    for needle in ("got SIGUSR1", f"step exited with code {exitcodes.REQUEUE}",
                   f"re-queueing job {job} (restart 1", "step exited with code 0",
                   "pre-empted: checkpoint written"):
        assert needle in log, (needle, rep)


@pytest.mark.slow  # ~30 s; the CI suite keeps the array-task re-queue test on the real Slurm
def test_preempt_requeue_resume(cluster, tiny, tmp_path):
    """2 ranks over 2 grid points: 2 groups of one rank (a sub-communicator each), pre-empted
    while both train; the re-queued job resumes both points from their checkpoints."""
    t0 = time.monotonic()
    run_dir = tmp_path / "run"
    script = render_sbatch(options(ntasks_per_node=2), str(tiny.campaign), str(run_dir))
    assert f"prog=({shlex.quote(PYTHON)} -m rgdist)" in script
    job = cluster.submit(script, run_dir)
    info = preempt_and_finish(cluster, run_dir, job, n_training=2, meanwhile=tiny.start)
    log, rep = slurm_log(run_dir, job), report(run_dir, job)
    check_requeued_once(info, log, job, rep)
    logs = rank_logs(run_dir)
    assert len(logs) == 2, rep
    for r, text in enumerate(logs):
        # both starts: a world of 2 ranks split into 2 groups, this rank alone in group r
        assert re.findall(rf"rank {r}: start: (\d+) ranks, group (\d+) of (\d+)", text) == \
            [("2", str(r), "2")] * 2, rep
        assert text.count("pre-empted during point") == 1, rep
        assert re.search(r"resumed from checkpoint \S+ at stage train", text), rep
        assert text.count("campaign complete") == 1, rep
    got, ref = digest(run_dir), tiny.digest()
    assert got == ref, digest_diff(got, ref)[:10]
    print(f"pre-empt/requeue/resume (2 points, 2 ranks): {time.monotonic() - t0:.1f} s "
          f"({info['_times']}); serial reference {tiny.seconds:.1f} s, run meanwhile")


@pytest.mark.slow
def test_preempt_one_point_shared_by_two_ranks(cluster, tmp_path):
    """One grid point, 2 ranks in one sub-communicator (HMC blocks and sample chunks split):
    the ranks agree on the step at which to stop, and the resumed result equals the serial."""
    t0 = time.monotonic()
    serial = Reference(tiny_campaign(tmp_path, ONE_POINT), tmp_path)
    run_dir = tmp_path / "run"
    job = cluster.submit(render_sbatch(options(ntasks_per_node=2), str(serial.campaign),
                                       str(run_dir)), run_dir)
    try:
        info = preempt_and_finish(cluster, run_dir, job, n_training=1, meanwhile=serial.start)
        ref = serial.digest()
    finally:
        serial.stop()
    log, rep = slurm_log(run_dir, job), report(run_dir, job)
    check_requeued_once(info, log, job, rep)
    logs = rank_logs(run_dir)
    assert len(logs) == 2, rep
    for r, text in enumerate(logs):
        assert re.findall(rf"rank {r}: start: (\d+) ranks, group (\d+) of (\d+)", text) == \
            [("2", "0", "1")] * 2, rep
    # the point's root logs for the pair
    assert re.search(r"resumed from checkpoint \S+ at stage train", logs[0]), rep
    got = digest(run_dir)
    assert got == ref, digest_diff(got, ref)[:10]
    print(f"pre-empt/requeue/resume (1 point, 2 ranks): {time.monotonic() - t0:.1f} s "
          f"({info['_times']})")


@pytest.mark.slow
def test_array_tasks_real_campaign(cluster, tiny, tmp_path):
    """``--array``: 2 tasks of 1 rank, each ``rgdist run --points i/2``; task 1 is pre-empted,
    re-queued alone and re-runs ``run`` on its task directory, which resumes it. Each task's
    points are bitwise those of the full serial run."""
    t0 = time.monotonic()
    run_dir = tmp_path / "run"
    job = cluster.submit(render_sbatch(options(array=True, array_size=2), str(tiny.campaign),
                                       str(run_dir)), run_dir)
    task1 = run_dir / "task-1"
    wait_for(lambda: training(task1, 1), 180, "array task 1 to train")
    cluster.usr1(f"{job}_1")
    tiny.start()
    infos = [cluster.wait_final(f"{job}_{i}", timeout=300) for i in range(2)]
    reps = [report(run_dir / f"task-{i}", f"{job}_{i}", log_dir=run_dir) for i in range(2)]
    assert [i["JobState"] for i in infos] == ["COMPLETED"] * 2, (infos, reps)
    assert [i["Restarts"] for i in infos] == ["0", "1"], (infos, reps)
    assert re.search(r"resumed from checkpoint \S+ at stage train", rank_logs(task1)[0]), reps[1]
    ref, seen = tiny.digest(), set()
    for i in range(2):
        got = digest(run_dir / f"task-{i}")
        mine = {k: v for k, v in got.items() if k.startswith("points/")}
        theirs = {k: ref.get(k) for k in mine}
        assert mine and mine == theirs, digest_diff(mine, theirs)[:10]
        seen |= {k.split("/")[1] for k in mine}
    assert seen == {k.split("/")[1] for k in ref if k.startswith("points/")}
    print(f"array of 2 (task 1 pre-empted): {time.monotonic() - t0:.1f} s")


# --- the stand-in workload: Slurm mechanics at low cost -------------------------------------
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


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Standin:
    """The stand-in program (``command`` takes the rgdist verbs) and its campaign file."""

    command: tuple[str, ...]
    campaign: Path

    def run(self, *args: str) -> None:
        subprocess.run([*self.command, *args], check=True, timeout=120, capture_output=True)

    @staticmethod
    def result(run_dir: Path):
        return _read_json(run_dir / "result.json")

    @staticmethod
    def progress(run_dir: Path) -> int:
        return (_read_json(run_dir / "progress.json") or {}).get("step", 0)

    @staticmethod
    def starts(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Standin:
    d = tmp_path_factory.mktemp("standin")
    (d / "standin.py").write_text(STANDIN)
    (d / "campaign.json").write_text(json.dumps({"n_steps": 40, "step_s": 0.1, "n_points": 5}))
    return Standin(command=(PYTHON, str(d / "standin.py")), campaign=d / "campaign.json")


@pytest.fixture(scope="module")
def standin_reference(standin, tmp_path_factory) -> dict:
    """The stand-in's uninterrupted result, run directly (no Slurm; no sleeps, which do not
    change the result)."""
    d = tmp_path_factory.mktemp("standin_ref")
    fast = d / "campaign.json"
    fast.write_text(json.dumps({**json.loads(standin.campaign.read_text()), "step_s": 0}))
    run_dir = d / "run"
    standin.run("run", str(fast), "--run-dir", str(run_dir))
    res = standin.result(run_dir)
    assert res is not None
    return res


def test_requeue_cap_stops_and_keeps_checkpoint(cluster, standin, standin_reference, tmp_path):
    run_dir = tmp_path / "run"
    job = cluster.submit(render_sbatch(options(max_requeues=0), str(standin.campaign),
                                       str(run_dir), command=standin.command), run_dir)
    wait_for(lambda: standin.progress(run_dir) >= 3, 60, "the stand-in to make progress")
    cluster.usr1(job)
    info = cluster.wait_final(job)
    log = slurm_log(run_dir, job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == f"{exitcodes.REQUEUE}:0", (info, log)
    assert info["Restarts"] == "0" and "re-queueing job" not in log
    assert "pre-empted after 0 re-queues (cap 0)" in log, log
    assert standin.result(run_dir) is None          # stopped mid-run, checkpoint kept
    standin.run("resume", str(run_dir))              # resume by hand
    assert standin.result(run_dir) == standin_reference


def test_array_tasks_split_points_and_requeue_alone(cluster, standin, standin_reference, tmp_path):
    run_dir = tmp_path / "run"
    k = 2
    job = cluster.submit(render_sbatch(options(array=True, array_size=k), str(standin.campaign),
                                       str(run_dir), command=standin.command), run_dir)
    task1 = run_dir / "task-1"
    wait_for(lambda: standin.progress(task1) >= 3, 60, "array task 1 to make progress")
    cluster.usr1(f"{job}_1")
    infos = [cluster.wait_final(f"{job}_{i}") for i in range(k)]
    logs = [slurm_log(run_dir, f"{job}_{i}") for i in range(k)]
    assert [i["JobState"] for i in infos] == ["COMPLETED"] * k, (infos, logs)
    assert [i["Restarts"] for i in infos] == ["0", "1"], (infos, logs)
    n_points = json.loads(standin.campaign.read_text())["n_points"]
    got = [standin.result(run_dir / f"task-{i}") for i in range(k)]
    assert [g["points"] for g in got] == [[p for p in range(n_points) if p % k == i] for i in range(k)]
    assert got[0]["acc"] == got[1]["acc"] == standin_reference["acc"]   # task 1 was interrupted
    s1 = standin.starts(task1)
    assert [x["verb"] for x in s1] == ["run", "run"] and s1[1]["from_step"] >= 3, s1
    assert [x["restart"] for x in s1] in (["0", "1"], [None, "1"]), s1
    assert all(x["omp"] == "1" for x in s1), s1


@pytest.mark.slow
def test_time_limit_signal_requeues(cluster, standin, tmp_path):
    """The real trigger: ``--signal=B:USR1@100`` on a 2-minute job fires (Slurm checks about
    every 30 s) before the time limit; the job re-queues and finishes within its cap."""
    t0 = time.monotonic()
    slow = tmp_path / "campaign.json"
    slow.write_text(json.dumps({**json.loads(standin.campaign.read_text()), "n_steps": 600}))
    run_dir = tmp_path / "run"
    job = cluster.submit(render_sbatch(options(time="00:02:00", signal_lead_s=100, max_requeues=4),
                                       str(slow), str(run_dir), command=standin.command), run_dir)
    ref_dir = tmp_path / "ref"   # the uninterrupted run, meanwhile
    ref = subprocess.Popen([*standin.command, "run", str(slow), "--run-dir", str(ref_dir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = cluster.wait_final(job, timeout=480)
        assert ref.wait(timeout=240) == 0
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
    log = slurm_log(run_dir, job)
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, (info, log)
    assert "got SIGUSR1" in log and "TIMEOUT" not in log, log
    assert standin.result(run_dir) == standin.result(ref_dir)
    print(f"time-limit signal job: {time.monotonic() - t0:.1f} s, restarts {info['Restarts']}")
