"""RunLock: refusal while a live job holds the run dir, take-over of stale locks."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rgdist.errors import RunLockedError
from rgdist.io.lock import LOCK_NAME, RunLock, lock_holder, pid_alive, proc_start_time

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from rgdist.io.lock import RunLock
with RunLock(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "RGDIST_NO_MPI": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _write_lock(run_dir: Path, **fields):
    info = {"pid": 999999, "host": "elsewhere", "proc_start": None, "started": "then",
            "heartbeat_unix": time.time(), "token": "x" * 32, "argv": []}
    info.update(fields)
    (run_dir / LOCK_NAME).write_text(json.dumps(info))


def test_live_holder_refuses_then_killed_holder_is_taken_over(tmp_path, holder_process):
    with pytest.raises(RunLockedError) as info:
        RunLock(tmp_path).acquire()
    msg = str(info.value)
    assert f"pid {holder_process.pid}" in msg and socket.gethostname() in msg and "started" in msg
    assert lock_holder(tmp_path) is not None
    holder_process.send_signal(signal.SIGKILL)
    holder_process.wait(timeout=30)
    assert lock_holder(tmp_path) is None
    with RunLock(tmp_path) as lock:
        assert f"pid {holder_process.pid} is no longer running" in lock.took_over
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_same_process_cannot_hold_twice_and_release_frees(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.took_over is None
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):
        pass


def test_other_host_heartbeat_decides(tmp_path):
    _write_lock(tmp_path, heartbeat_unix=time.time() - 10)
    with pytest.raises(RunLockedError, match="host elsewhere"):
        RunLock(tmp_path, stale_after_s=300, heartbeat_s=30).acquire()
    _write_lock(tmp_path, heartbeat_unix=time.time() - 301)
    with RunLock(tmp_path, stale_after_s=300, heartbeat_s=30) as lock:
        assert "heartbeat of host elsewhere" in lock.took_over


def test_reused_pid_and_unreadable_lock_are_stale(tmp_path):
    # our own pid is alive, but the recorded start time belongs to an earlier process
    _write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid(), proc_start="1")
    assert proc_start_time(os.getpid()) not in (None, "1")
    with RunLock(tmp_path) as lock:
        assert "now belongs to another process" in lock.took_over
    (tmp_path / LOCK_NAME).write_text("{")  # writer died mid-write (guard held while writing)
    with RunLock(tmp_path) as lock:
        assert "unreadable" in lock.took_over


def test_zombie_counts_as_dead():
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        deadline = time.time() + 10
        while pid_alive(child.pid):  # killed but not yet reaped: a zombie
            assert time.time() < deadline
            time.sleep(0.01)
        assert Path(f"/proc/{child.pid}").exists(), "not reaped yet, so it was seen as a zombie"
        assert child.poll() is not None
    finally:
        child.kill()
        child.wait()


def test_heartbeat_thread_refreshes_and_detects_loss(tmp_path):
    lock = RunLock(tmp_path, stale_after_s=5, heartbeat_s=0.05).acquire()
    try:
        first = json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat_unix"]
        deadline = time.time() + 10
        while json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat_unix"] == first:
            assert time.time() < deadline, "heartbeat never refreshed"
            time.sleep(0.02)
        lock.check()
        _write_lock(tmp_path, token="someone-else")
        with pytest.raises(RunLockedError, match="was taken"):
            lock.heartbeat()
    finally:
        lock.release()
    assert (tmp_path / LOCK_NAME).exists(), "release must not delete another job's lock"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="stale_after_s"):
        RunLock(tmp_path, stale_after_s=0)
    with pytest.raises(ValueError, match="heartbeat_s"):
        RunLock(tmp_path, stale_after_s=10, heartbeat_s=10)
