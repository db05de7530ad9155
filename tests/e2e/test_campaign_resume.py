"""A campaign killed with SIGKILL at any moment (HMC, training, sampling, mid-checkpoint
write) resumes to a results file identical to the uninterrupted run's; SIGUSR1 gives a
checkpoint and the re-queue exit code; status reads running and killed campaigns."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from rgdist import exitcodes

from campaign_util import digest, env, rgdist, write_tiny

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def reference(tiny_run):
    return tiny_run.campaign, tiny_run.digest, tiny_run.stdout


def test_reference_prints_table(reference):
    _, dig, stdout = reference
    assert "diffusion" in stdout and "hmc" in stdout
    assert any(k.endswith("estimates/diffusion/chi") for k in dig)
    assert len([k for k in dig if k.endswith("estimates/hmc/binder")]) == 4  # 2 x 2 grid


@pytest.mark.parametrize("site,count", [("hmc_traj", 9), ("train_step", 5), ("sample_chunk", 3),
                                         pytest.param("ckpt_write", 4, marks=pytest.mark.slow),
                                         ("ckpt_write", 9)])
def test_kill_and_resume_is_bitwise_identical(reference, tmp_path, site, count):
    camp, ref_digest, _ = reference
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT=f"{site}:{count}")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (tmp_path / "run" / "results.h5").exists()
    st = rgdist(["status", "run"], cwd=tmp_path)
    assert st.returncode == 0, st.stderr
    assert "not running" in st.stdout  # the killed job's lock is not held
    resumed = rgdist(["resume", "run"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in (tmp_path / "run" / "logs" / "rank-0000.log").read_text()
    assert digest(tmp_path / "run") == ref_digest
    st = rgdist(["status", "run"], cwd=tmp_path)
    assert st.stdout.count(" done ") >= 4, st.stdout


def test_sigusr1_checkpoints_and_requeues(reference, tmp_path):
    camp, ref_digest, _ = reference
    # long enough that the signal lands in training; if it lands later (sampling), the
    # pre-emption and the bitwise resume are checked all the same
    slow = write_tiny(tmp_path, train_steps=150, name="slow.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "rgdist", "run", str(slow), "--run-dir", "run"],
                            cwd=tmp_path, env=env(RGDIST_NO_MPI=1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    status = tmp_path / "run" / "status"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until a point is training
        if status.exists() and any('"train"' in f.read_text() for f in status.glob("*.json")):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the campaign never reached training")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == exitcodes.REQUEUE, err[-2000:]
    assert elapsed < 60, f"took {elapsed:.1f}s to checkpoint and exit"
    assert "pre-empted" in err
    done = rgdist(["resume", "run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # the same campaign uninterrupted
    full = rgdist(["run", str(slow), "--run-dir", "full"], cwd=tmp_path)
    assert full.returncode == 0
    assert digest(tmp_path / "run") == digest(tmp_path / "full")


def test_second_job_on_same_run_dir_is_refused(reference, tmp_path):
    camp, _, _ = reference
    slow = write_tiny(tmp_path, train_steps=400, name="slow.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "rgdist", "run", str(slow), "--run-dir", "run"],
                            cwd=tmp_path, env=env(RGDIST_NO_MPI=1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "campaign.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = rgdist(["resume", "run"], cwd=tmp_path)
        assert second.returncode == exitcodes.LOCKED, second.stderr
        assert "lock" in second.stderr.lower()
        st = rgdist(["status", "run"], cwd=tmp_path)
        assert "running" in st.stdout and "not running" not in st.stdout
    finally:
        proc.kill()
        proc.wait()


def test_run_on_a_different_campaign_dir_is_bad_input(reference, tmp_path):
    camp, _, _ = reference
    first = write_tiny(tmp_path, train_steps=3, sample_steps=2, name="a.yaml")
    assert rgdist(["run", str(first), "--run-dir", "run"], cwd=tmp_path).returncode == 0
    other = write_tiny(tmp_path, train_steps=4, sample_steps=2, name="b.yaml")
    out = rgdist(["run", str(other), "--run-dir", "run"], cwd=tmp_path)
    assert out.returncode == exitcodes.BAD_INPUT
    assert out.stderr.startswith("error:") and "different campaign" in out.stderr


def test_flow_observables_are_stored(reference):
    _, dig, _ = reference
    for kind in ("forward", "learned", "gaussian"):
        assert sum(k.endswith(f"flow/{kind}/m_R") for k in dig) == 4
    assert sum(k.endswith("flow/deviation/lambda_R") for k in dig) == 4
