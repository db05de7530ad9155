"""rgdist.campaign.slurm: golden scripts, option checks, and the script's logic run under
bash with stand-in ``srun``/``scontrol``/``sbatch`` (no Slurm needed).

Regenerate the golden files with ``RGDIST_UPDATE_GOLDEN=1``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from rgdist import exitcodes
from rgdist.campaign.slurm import SlurmOptions, parse_time, render_sbatch
from rgdist.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "slurm_minimal.sh": (SlurmOptions(python="/opt/venv/bin/python"),
                         "/home/user/campaigns/default.yaml", "/scratch/user/runs/default"),
    "slurm_gpu.sh": (SlurmOptions(job_name="rgdist-critical_scan", nodes=2, gpus_per_node=4,
                                  cpus_per_task=8, time="1-12:00:00", partition="gpu",
                                  account="phys123", max_requeues=5, signal_lead_s=300,
                                  python="/opt/venv/bin/python"),
                     "/home/user/campaigns/critical scan.yaml", "/scratch/user/runs/crit"),
    "slurm_array.sh": (SlurmOptions(job_name="rgdist-scan", array=True, array_size=12,
                                    cpus_per_task=2, time="04:00:00", partition="cpu",
                                    python="/opt/venv/bin/python"),
                       "/home/user/campaigns/scan.yaml", "/scratch/user/runs/scan"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    text = render_sbatch(*CASES[name])
    path = GOLDEN / name
    if os.environ.get("RGDIST_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{name} differs; RGDIST_UPDATE_GOLDEN=1 regenerates it"
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)


def sbatch_lines(text):
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_directives_sorted_and_conditional():
    minimal = sbatch_lines(render_sbatch(*CASES["slurm_minimal.sh"]))
    gpu = sbatch_lines(render_sbatch(*CASES["slurm_gpu.sh"]))
    array = sbatch_lines(render_sbatch(*CASES["slurm_array.sh"]))
    for lines in (minimal, gpu, array):
        assert lines == sorted(lines)
        assert "#SBATCH --requeue" in lines and "#SBATCH --open-mode=append" in lines
    assert not any("gpus" in l or "partition" in l or "account" in l or "array" in l for l in minimal)
    assert "#SBATCH --output=/scratch/user/runs/default/slurm-%j.out" in minimal
    assert "#SBATCH --signal=B:USR1@120" in minimal
    # one rank per GPU
    assert {"#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=2",
            "#SBATCH --partition=gpu", "#SBATCH --account=phys123", "#SBATCH --time=1-12:00:00",
            "#SBATCH --signal=B:USR1@300", "#SBATCH --cpus-per-task=8"} <= set(gpu)
    assert {"#SBATCH --array=0-11", "#SBATCH --output=/scratch/user/runs/scan/slurm-%A_%a.out"} <= set(array)
    # a % in the run directory is escaped for Slurm's filename patterns
    odd = render_sbatch(SlurmOptions(), "c.yaml", "/runs/100%")
    assert "#SBATCH --output=/runs/100%%/slurm-%j.out" in odd


@pytest.mark.parametrize("value,seconds", [("00:10:00", 600), ("48:00:00", 172800),
                                           ("1-00:00:01", 86401), ("2-23:59:59", 2 * 86400 + 86399)])
def test_parse_time_ok(value, seconds):
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", ["10m", "00:60:00", "00:00:60", "1-24:00:00", "00:00:00",
                                   "1:2:3", "-01:00:00", "", " 01:00:00"])
def test_parse_time_rejects(value):
    with pytest.raises(ConfigError, match="--time"):
        parse_time(value)


@pytest.mark.parametrize("kw,flag", [
    (dict(gpus_per_node=-1), "--gpus-per-node"), (dict(nodes=0), "--nodes"),
    (dict(ntasks_per_node=0), "--ntasks-per-node"), (dict(cpus_per_task=0), "--cpus-per-task"),
    (dict(max_requeues=-1), "--max-requeues"), (dict(time="25:99:00"), "--time"),
    (dict(gpus_per_node=4, ntasks_per_node=2), "--ntasks-per-node"),
    (dict(time="00:01:00"), "--time"),               # shorter than the 120 s signal lead
    (dict(partition="gpu queue"), "--partition"), (dict(account="a;b"), "--account"),
    (dict(job_name="two words"), "job_name"), (dict(array_size=0), "array_size"),
    (dict(nodes=True), "--nodes"), (dict(signal_lead_s=0), "signal_lead_s"),
])
def test_options_reject(kw, flag):
    with pytest.raises(ConfigError) as err:
        SlurmOptions(**kw)
    assert err.value.path == flag, str(err.value)


def test_run_dir_unfit_for_sbatch_line():
    with pytest.raises(ConfigError, match="--run-dir"):
        render_sbatch(SlurmOptions(), "c.yaml", "/runs/with space")


# ---------------------------------------------------------------- the script's logic, under bash

FAKE_PROG = r'''
import json, os, signal, sys, time
from pathlib import Path
out = Path(os.environ["FAKE_OUT"])
with open(out / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"argv": sys.argv[1:], "omp": os.environ.get("OMP_NUM_THREADS")}) + "\n")
mode = os.environ.get("FAKE_MODE", "exit")
if mode == "exit":
    sys.exit(int(os.environ.get("FAKE_RC", "0")))
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append("USR1"))
signal.signal(signal.SIGTERM, lambda s, f: got.append("TERM"))
(out / "ready").write_text("1")
t_end = time.monotonic() + 30
while not got and time.monotonic() < t_end:
    time.sleep(0.01)
(out / "signals").write_text(",".join(got))
sys.exit(75 if got else 9)
'''


@pytest.fixture
def fakes(tmp_path):
    """A bin folder with srun (drops its options, runs the program) and scontrol/sbatch
    (record their arguments); the fake program records its argv and exits as told."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (bin_ / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    for tool in ("scontrol", "sbatch"):
        (bin_ / tool).write_text(f'#!/bin/bash\necho "$*" >> "$FAKE_OUT/{tool}"\n'
                                 f'[ "{tool}" = sbatch ] && echo "4242;cluster"\nexit 0\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    (tmp_path / "prog.py").write_text(FAKE_PROG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_}:{env['PATH']}", FAKE_OUT=str(out), SLURM_JOB_ID="123",
               SLURM_CPUS_PER_TASK="3")
    return types.SimpleNamespace(bin=bin_, out=out, env=env,
                                 command=(sys.executable, str(tmp_path / "prog.py")))


def run_script(fakes, tmp_path, opts=None, run_dir=None, campaign=None, env=None):
    run_dir = run_dir or str(tmp_path / "run_dir$HOME;x")  # hostile names, shell-quoted
    campaign = campaign or str(tmp_path / "it's a campaign.yaml")
    opts = opts or SlurmOptions(max_requeues=2)
    script = tmp_path / "job.sh"
    script.write_text(render_sbatch(opts, campaign, run_dir, command=fakes.command))
    proc = subprocess.run(["bash", str(script)], env={**fakes.env, **(env or {})},
                          capture_output=True, text=True, timeout=60)
    calls = [json.loads(l) for l in (fakes.out / "calls.jsonl").read_text().splitlines()] \
        if (fakes.out / "calls.jsonl").exists() else []
    scontrol = (fakes.out / "scontrol").read_text().splitlines() if (fakes.out / "scontrol").exists() else []
    return proc, calls, scontrol, campaign, run_dir


def test_first_start_runs_campaign_and_passes_exit_code(fakes, tmp_path):
    proc, calls, scontrol, campaign, run_dir = run_script(fakes, tmp_path, env={"FAKE_RC": "3"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert calls == [{"argv": ["run", campaign, "--run-dir", run_dir], "omp": "3"}]
    assert scontrol == []


def test_success_exits_zero_without_requeue(fakes, tmp_path):
    proc, calls, scontrol, *_ = run_script(fakes, tmp_path, env={"FAKE_RC": "0"})
    assert proc.returncode == 0 and len(calls) == 1 and scontrol == []
    assert "step exited with code 0" in proc.stdout


def test_preempted_exit_requeues(fakes, tmp_path):
    proc, calls, scontrol, *_ = run_script(fakes, tmp_path, env={"FAKE_RC": str(exitcodes.REQUEUE)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert scontrol == ["requeue 123"]
    assert "re-queueing job 123 (restart 1 of at most 2)" in proc.stdout


def test_restart_resumes(fakes, tmp_path):
    proc, calls, scontrol, _, run_dir = run_script(
        fakes, tmp_path, env={"FAKE_RC": str(exitcodes.REQUEUE), "SLURM_RESTART_COUNT": "1"})
    assert calls[0]["argv"] == ["resume", run_dir]
    assert proc.returncode == 0 and scontrol == ["requeue 123"]


def test_requeue_cap(fakes, tmp_path):
    # at the cap: the pre-empted program is not re-queued; the script exits 75
    proc, calls, scontrol, *_ = run_script(
        fakes, tmp_path, env={"FAKE_RC": str(exitcodes.REQUEUE), "SLURM_RESTART_COUNT": "2"})
    assert proc.returncode == exitcodes.REQUEUE and scontrol == [] and len(calls) == 1
    assert "pre-empted after 2 re-queues (cap 2)" in proc.stderr + proc.stdout
    # past the cap (e.g. re-queued by Slurm itself): stop before running anything
    (fakes.out / "calls.jsonl").unlink()
    proc, calls, scontrol, *_ = run_script(
        fakes, tmp_path, env={"FAKE_RC": "0", "SLURM_RESTART_COUNT": "3"})
    assert proc.returncode == 1 and calls == [] and scontrol == []
    assert "exceeds the cap of 2 re-queues" in proc.stderr + proc.stdout


def test_array_task_runs_its_points_and_requeues_only_itself(fakes, tmp_path):
    opts = SlurmOptions(array=True, array_size=3, max_requeues=1)
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_JOB_ID": "120",
           "FAKE_RC": str(exitcodes.REQUEUE)}
    for restart in ("0", "1"):
        proc, calls, scontrol, campaign, run_dir = run_script(
            fakes, tmp_path, opts=opts, env={**env, "SLURM_RESTART_COUNT": restart})
    assert [c["argv"] for c in calls] == [["run", campaign, "--run-dir", f"{run_dir}/task-1",
                                           "--points", "1/3"]] * 2
    assert scontrol == ["requeue 120_1"]          # the second start hit the cap
    assert proc.returncode == exitcodes.REQUEUE


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_trap_relays_signal_to_step(fakes, tmp_path, sig):
    """A signal to the batch shell reaches the program as SIGUSR1 (srun kills a step on
    SIGTERM); the program's exit 75 then re-queues the job."""
    script = tmp_path / "job.sh"
    script.write_text(render_sbatch(SlurmOptions(), str(tmp_path / "c.yaml"), str(tmp_path / "r"),
                                    command=fakes.command))
    proc = subprocess.Popen(["bash", str(script)], env={**fakes.env, "FAKE_MODE": "wait"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t_end = time.monotonic() + 30
        while not (fakes.out / "ready").exists():
            assert time.monotonic() < t_end and proc.poll() is None, "program did not start"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (fakes.out / "signals").read_text() == "USR1"
    assert proc.returncode == 0, out
    assert f"got SIG{sig.name[3:]}" in out and "step exited with code 75" in out
    assert (fakes.out / "scontrol").read_text().split() == ["requeue", "123"]


# ---------------------------------------------------------------- rgdist slurm (the CLI verb)

@pytest.fixture
def stub_spec(monkeypatch, tmp_path):
    """A stand-in for rgdist.campaign.spec: a campaign of 7 grid points named 'scan'."""
    def load_campaign(path):
        if Path(path).name == "bad.yaml":
            raise ConfigError("grid.m2", "must be a list of numbers")
        return types.SimpleNamespace(name="scan", output=types.SimpleNamespace(dir="runs/scan"),
                                     points=lambda: list(range(7)))

    mod = types.ModuleType("rgdist.campaign.spec")
    mod.load_campaign = load_campaign
    monkeypatch.setitem(sys.modules, "rgdist.campaign.spec", mod)
    campaign = tmp_path / "scan.yaml"
    campaign.write_text("name: scan\n")
    monkeypatch.chdir(tmp_path)
    return campaign


def test_cli_pretend_prints_script(stub_spec, tmp_path, capsys):
    from rgdist.cli import main

    rc = main(["slurm", str(stub_spec), "--pretend", "--array", "--time", "02:00:00"])
    out = capsys.readouterr().out
    assert rc == 0
    opts = SlurmOptions(job_name="rgdist-scan", time="02:00:00", array=True, array_size=7,
                        python=sys.executable)
    assert out == render_sbatch(opts, str(stub_spec.resolve()), str(tmp_path / "runs" / "scan"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags,flag", [(["--gpus-per-node", "-1"], "--gpus-per-node"),
                                        (["--time", "1h"], "--time"),
                                        (["--gpus-per-node", "2", "--ntasks-per-node", "3"], "--ntasks-per-node"),
                                        (["--max-requeues", "-2"], "--max-requeues")])
def test_cli_bad_flags_exit_2(stub_spec, capsys, flags, flag):
    from rgdist.cli import main

    assert main(["slurm", str(stub_spec), "--pretend", *flags]) == exitcodes.BAD_INPUT
    assert flag in capsys.readouterr().err


def test_cli_bad_campaign_exit_2(stub_spec, tmp_path, capsys):
    from rgdist.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("x: 1\n")
    assert main(["slurm", str(bad), "--pretend"]) == exitcodes.BAD_INPUT
    assert "grid.m2" in capsys.readouterr().err
    assert main(["slurm", str(tmp_path / "missing.yaml"), "--pretend"]) == exitcodes.BAD_INPUT


def test_cli_without_sbatch_exit_2(stub_spec, tmp_path, monkeypatch, capsys):
    from rgdist.cli import main

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["slurm", str(stub_spec)]) == exitcodes.BAD_INPUT
    assert "sbatch" in capsys.readouterr().err


def test_cli_submits(stub_spec, fakes, tmp_path, monkeypatch, capsys):
    from rgdist.cli import main

    monkeypatch.setenv("PATH", fakes.env["PATH"])
    monkeypatch.setenv("FAKE_OUT", str(fakes.out))
    rc = main(["slurm", str(stub_spec), "--run-dir", "my_run", "--nodes", "2", "--partition", "p"])
    assert rc == 0
    job = tmp_path / "my_run" / "job.sbatch"
    assert os.access(job, os.X_OK)
    assert (fakes.out / "sbatch").read_text().split() == ["--parsable", str(job)]
    assert "submitted job 4242" in capsys.readouterr().out
    assert "#SBATCH --nodes=2" in job.read_text() and "#SBATCH --partition=p" in job.read_text()
