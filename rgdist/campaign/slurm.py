"""SLURM batch scripts for campaigns: render, print (``--pretend``) or submit.

The rendered script (one allocation, or a job array with one task per group of grid points):

* ``#SBATCH`` lines sorted by option, ``--signal=B:USR1@<lead>`` so that the batch shell
  hears of the time limit ``lead`` seconds early, ``--requeue --open-mode=append`` so that a
  re-queued job appends to the same log (``slurm-%j.out``, arrays ``slurm-%A_%a.out``);
* the program runs as a background ``srun --unbuffered`` step and the shell ``wait``\\ s for
  it, so that its traps run at once: SIGUSR1 and SIGTERM are relayed to the step as SIGUSR1
  (srun passes SIGUSR1 on to every rank; on SIGTERM srun itself would kill the step);
* the ranks checkpoint and exit with ``exitcodes.REQUEUE`` (75); the script then runs
  ``scontrol requeue`` on its job (array task: ``${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}``,
  since the last task's ``SLURM_JOB_ID`` names the whole array) and exits 0. ``SLURM_RESTART_COUNT`` counts the
  restarts; past ``max_requeues`` the script stops with a message instead of re-queueing;
* a restart (``SLURM_RESTART_COUNT > 0``) runs ``rgdist resume RUN_DIR``; an array task
  re-runs ``rgdist run CAMPAIGN --run-dir RUN_DIR/task-i --points i/K``, which resumes the
  existing task directory with the same subset of points (index % K == i).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rgdist import exitcodes
from rgdist.errors import ConfigError

#: the command-line flag of each option, used to name the culprit in errors
FLAGS = {
    "job_name": "job_name", "nodes": "--nodes", "ntasks_per_node": "--ntasks-per-node",
    "gpus_per_node": "--gpus-per-node", "cpus_per_task": "--cpus-per-task", "time": "--time",
    "partition": "--partition", "account": "--account", "array": "--array",
    "array_size": "array_size", "max_requeues": "--max-requeues",
    "signal_lead_s": "signal_lead_s", "python": "python",
}

_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2}):(\d{2})$")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_LIST = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")
_SBATCH_PATH_BAD = re.compile(r"[\s'\"\\]")


def parse_time(value: str) -> int:
    """Seconds of a SLURM time limit ``HH:MM:SS`` or ``D-HH:MM:SS`` (MM, SS < 60; HH < 24
    after a day count); ConfigError naming ``--time`` otherwise."""
    m = _TIME.match(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError("--time", f"must be HH:MM:SS or D-HH:MM:SS, got {value!r}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    if minutes > 59 or seconds > 59 or (m.group(1) is not None and hours > 23):
        raise ConfigError("--time", f"minutes and seconds must be < 60 (hours < 24 after a day "
                                    f"count), got {value!r}")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ConfigError("--time", f"must be positive, got {value!r}")
    return total


@dataclass(frozen=True)
class SlurmOptions:
    """Resources and behaviour of one batch job. ``ntasks_per_node=None`` means one rank per
    GPU when ``gpus_per_node > 0``, else one rank per node. ``python`` is the interpreter
    (of the venv) that the job runs ``-m rgdist`` with."""

    job_name: str = "rgdist"
    nodes: int = 1
    ntasks_per_node: int | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    array: bool = False
    array_size: int = 1
    max_requeues: int = 3
    signal_lead_s: int = 120
    python: str = "python3"

    def __post_init__(self):
        def need_int(name, lo, hi=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ConfigError(FLAGS[name], f"must be an integer {rng}, got {v!r}")

        need_int("nodes", 1)
        need_int("gpus_per_node", 0)
        need_int("cpus_per_task", 1)
        need_int("max_requeues", 0)
        need_int("signal_lead_s", 1, 65535)
        need_int("array_size", 1)
        if self.ntasks_per_node is not None:
            need_int("ntasks_per_node", 1)
            if self.gpus_per_node > 0 and self.ntasks_per_node != self.gpus_per_node:
                raise ConfigError("--ntasks-per-node", f"must equal --gpus-per-node="
                                  f"{self.gpus_per_node} (one GPU per rank), got {self.ntasks_per_node}")
        if not isinstance(self.job_name, str) or not _NAME.match(self.job_name):
            raise ConfigError("job_name", f"must be letters, digits and _.+- only, got {self.job_name!r}")
        for name in ("partition", "account"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not _LIST.match(v)):
                raise ConfigError(FLAGS[name], f"must be a name (letters, digits, _.-; a comma "
                                               f"list for several), got {v!r}")
        if not isinstance(self.array, bool):
            raise ConfigError("--array", f"must be true or false, got {self.array!r}")
        if not isinstance(self.python, str) or not self.python or "\n" in self.python:
            raise ConfigError("python", f"must be the path of a Python interpreter, got {self.python!r}")
        seconds = parse_time(self.time)
        if self.signal_lead_s >= seconds:
            raise ConfigError("--time", f"{self.time} ({seconds} s) must exceed the pre-emption "
                                        f"signal lead of {self.signal_lead_s} s")

    @property
    def tasks_per_node(self) -> int:
        if self.ntasks_per_node is not None:
            return self.ntasks_per_node
        return self.gpus_per_node if self.gpus_per_node > 0 else 1


def _sbatch_path(run_dir: str) -> str:
    """``run_dir`` for an ``#SBATCH`` line: no whitespace/quotes/backslashes, ``%`` doubled."""
    if not run_dir or _SBATCH_PATH_BAD.search(run_dir):
        raise ConfigError("--run-dir", f"must be a path without whitespace, quotes or "
                                       f"backslashes (it goes into #SBATCH --output), got {run_dir!r}")
    return run_dir.replace("%", "%%")


def sbatch_directives(opts: SlurmOptions, run_dir: str) -> list[str]:
    """The ``#SBATCH`` lines, sorted by option."""
    out = _sbatch_path(run_dir.rstrip("/") or "/")
    log = "slurm-%A_%a.out" if opts.array else "slurm-%j.out"
    d = {
        "--job-name": opts.job_name,
        "--nodes": str(opts.nodes),
        "--ntasks-per-node": str(opts.tasks_per_node),
        "--cpus-per-task": str(opts.cpus_per_task),
        "--time": opts.time,
        "--signal": f"B:USR1@{opts.signal_lead_s}",
        "--requeue": None,
        "--open-mode": "append",
        "--output": f"{out.rstrip('/')}/{log}",
    }
    if opts.gpus_per_node > 0:
        d["--gpus-per-node"] = str(opts.gpus_per_node)
    if opts.partition:
        d["--partition"] = opts.partition
    if opts.account:
        d["--account"] = opts.account
    if opts.array:
        d["--array"] = f"0-{opts.array_size - 1}"
    return [f"#SBATCH {k}" if v is None else f"#SBATCH {k}={v}" for k, v in sorted(d.items())]


_BODY = r"""
# rgdist campaign job (rendered by `rgdist slurm`). Pre-emption: SIGUSR1 reaches this shell
# {lead} s before the time limit; it is relayed to the ranks, which checkpoint and exit 75;
# the job then re-queues itself (at most {max_requeues} times) and resumes.
set -euo pipefail

export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}
prog=({prog})
campaign={campaign}
run_dir={run_dir}
max_requeues={max_requeues}
restarts=${{SLURM_RESTART_COUNT:-0}}
{select}
log() {{ echo "rgdist-slurm $(date '+%F %T'): $*"; }}
log "start: job ${{SLURM_JOB_ID:-?}} restart $restarts on ${{SLURM_JOB_NODELIST:-?}}"
if (( restarts > max_requeues )); then
  log "error: restart $restarts exceeds the cap of $max_requeues re-queues; resume by hand: $resume_hint" >&2
  exit 1
fi

step_pid=
relay() {{  # srun passes SIGUSR1 on to every rank (a SIGTERM would make srun kill the step)
  log "got SIG$1: asking the ranks to checkpoint"
  if [ -n "$step_pid" ]; then kill -s USR1 "$step_pid" 2>/dev/null || true; fi
}}
trap 'relay USR1' USR1
trap 'relay TERM' TERM
"${{step[@]}}" &
step_pid=$!
rc=0
while :; do  # a trap cuts `wait` short; wait again while the step runs
  wait "$step_pid" && rc=0 || rc=$?
  kill -0 "$step_pid" 2>/dev/null || break
done
if (( rc > 128 )); then  # the step may have ended while a trap ran: collect its own status
  wait "$step_pid" 2>/dev/null && rc=0 || {{ r=$?; (( r == 127 )) || rc=$r; }}
fi
log "step exited with code $rc"
if (( rc == {requeue} )); then
  if (( restarts >= max_requeues )); then
    log "error: pre-empted after $restarts re-queues (cap $max_requeues); resume by hand: $resume_hint" >&2
    exit {requeue}
  fi
  log "checkpoint written; re-queueing job $job_ref (restart $((restarts + 1)) of at most $max_requeues)"
  if ! scontrol requeue "$job_ref"; then
    log "error: scontrol requeue failed; resume by hand: $resume_hint" >&2
    exit {requeue}
  fi
  exit 0
fi
exit "$rc"
"""

_SELECT_ONE = """\
job_ref=${SLURM_JOB_ID:-}
resume_hint="rgdist resume $run_dir"
if (( restarts == 0 )); then
  step=(srun --unbuffered "${prog[@]}" run "$campaign" --run-dir "$run_dir")
else
  step=(srun --unbuffered "${prog[@]}" resume "$run_dir")
fi
"""

_SELECT_ARRAY = """\
: "${SLURM_ARRAY_TASK_ID:?is not set: this script runs as a job array (sbatch --array)}"
# the task's own id: a bare $SLURM_JOB_ID of the last task equals the array's id and
# `scontrol requeue` would re-queue every task
job_ref=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
task_dir="$run_dir/task-$SLURM_ARRAY_TASK_ID"
points="$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"
resume_hint="rgdist run $campaign --run-dir $task_dir --points $points"
# on a restart, `run` finds the task directory and resumes it with the same --points
step=(srun --unbuffered "${prog[@]}" run "$campaign" --run-dir "$task_dir" --points "$points")
"""


def render_sbatch(opts: SlurmOptions, campaign_file: str, run_dir: str, *,
                  command: Sequence[str] | None = None) -> str:
    """The batch script of a campaign (text). ``command`` replaces the program prefix
    ``(opts.python, "-m", "rgdist")``; it must understand ``run CAMPAIGN --run-dir D
    [--points i/K]`` and ``resume D`` and exit 75 when pre-empted."""
    prog = tuple(command) if command is not None else (opts.python, "-m", "rgdist")
    if not prog or any(not isinstance(w, str) or not w for w in prog):
        raise ConfigError("command", f"must be a non-empty list of non-empty strings, got {command!r}")
    if not isinstance(campaign_file, str) or not campaign_file:
        raise ConfigError("campaign", f"must be a file path, got {campaign_file!r}")
    body = _BODY.format(
        lead=opts.signal_lead_s, max_requeues=opts.max_requeues, requeue=exitcodes.REQUEUE,
        prog=" ".join(shlex.quote(w) for w in prog), campaign=shlex.quote(campaign_file),
        run_dir=shlex.quote(run_dir), select=_SELECT_ARRAY if opts.array else _SELECT_ONE,
    )
    return "#!/bin/bash\n" + "\n".join(sbatch_directives(opts, run_dir)) + "\n" + body


def _campaign_facts(path: str) -> tuple[str, str, int]:
    """(name, default run directory, number of grid points) of a campaign file."""
    from rgdist.campaign.spec import load_campaign

    camp = load_campaign(path)
    name = getattr(camp, "name", None) or Path(path).stem
    return str(name), str(camp.output.dir), len(camp.points())


def options_from_args(args, name: str, n_points: int) -> SlurmOptions:
    """SlurmOptions from the ``rgdist slurm`` flags (argparse namespace)."""
    job = "rgdist-" + (re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "campaign")
    return SlurmOptions(
        job_name=job, nodes=args.nodes, ntasks_per_node=args.ntasks_per_node,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=1 if args.cpus_per_task is None else args.cpus_per_task,
        time=args.time, partition=args.partition, account=args.account,
        array=bool(args.array), array_size=max(1, n_points), max_requeues=args.max_requeues,
        python=sys.executable or "python3",
    )


def slurm_cli(args) -> int:
    """``rgdist slurm CAMPAIGN.yaml [...]``: print the script (``--pretend``) or write
    ``RUN_DIR/job.sbatch`` and submit it with ``sbatch``. Bad flags raise ConfigError."""
    campaign = Path(args.campaign)
    if not campaign.is_file():
        raise ConfigError("campaign", f"{args.campaign} is not a file")
    name, default_dir, n_points = _campaign_facts(str(campaign))
    opts = options_from_args(args, name, n_points)
    run_dir = Path(args.run_dir if args.run_dir is not None else default_dir).absolute()
    script = render_sbatch(opts, str(campaign.resolve()), str(run_dir))
    if args.pretend:
        sys.stdout.write(script)
        return exitcodes.OK
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError("sbatch", "not found on PATH: run on a SLURM login node, or use "
                                    "--pretend to print the script")
    from rgdist.io.atomic import atomic_write_bytes

    run_dir.mkdir(parents=True, exist_ok=True)
    path = atomic_write_bytes(run_dir / "job.sbatch", script.encode(), mode=0o755)
    proc = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"error: sbatch rejected {path} (exit {proc.returncode}): {proc.stderr.strip()}",
              file=sys.stderr)
        return exitcodes.FAILURE
    job_id = proc.stdout.strip().split(";")[0]
    log = "slurm-%A_%a.out" if opts.array else "slurm-%j.out"
    print(f"submitted job {job_id}: script {path}, log {run_dir / log}")
    return exitcodes.OK
