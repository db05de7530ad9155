"""File-system faults at a checkpoint write and at the results write (disk full, quota,
read-only, vanished or unwritable directory) end the job with one line
``error: <path>: <what happened>; <the fix>``, exit code 74 (rgdist.exitcodes.IO_ERROR), no
traceback, the previous checkpoint still current and no temporary file left; once the cause
is gone, ``rgdist resume`` gives a results file bitwise identical to an uninterrupted run's.

Faults are injected with ``RGDIST_FAULT=site:count:kind[:rank]`` (rgdist.faults: the write
path raises the OSError a file system would); one test fills a real tmpfs (root only,
skipped where mounting is impossible).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from rgdist import exitcodes, faults
from rgdist.errors import ConfigError, StorageError, guess_run_dir, storage_failure
from rgdist.io.atomic import atomic_write_bytes, surfaced_write_errors
from rgdist.io.checkpoint import CheckpointStore, inspect_file
from rgdist.parallel.comm import Comm

from campaign_util import digest, mpirun, rgdist, write_tiny

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^error: (?P<path>/[^:]+): (?P<what>[^;]+); (?P<fix>.+)$")
CKPT = re.compile(r"^ckpt-(\d{8,})\.h5$")
needs_mpi = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")


# -- helpers ------------------------------------------------------------------------------------
def error_line(out: subprocess.CompletedProcess) -> re.Match:
    """The one ``error:`` line of a failed rgdist command (parsed); no traceback anywhere."""
    text = out.stdout + out.stderr
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text[-3000:]
    m = LINE.match(lines[0])
    assert m, lines[0]
    return m


def serial_error_line(out: subprocess.CompletedProcess) -> re.Match:
    """Serially stderr holds that line and nothing else."""
    m = error_line(out)
    assert [ln for ln in out.stderr.splitlines() if ln.strip()] == [m.group(0)], out.stderr
    return m


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files of a write that failed (checkpoint/results partials, atomic temps)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.name.endswith((".partial", ".tmp")))


def check_previous_checkpoint_current(point_dir: Path, failed_tag: int | None) -> int:
    """The pointer names an intact checkpoint older than the failed one, which it loads."""
    store = CheckpointStore(point_dir, Comm.serial())
    ptr = store.pointer()
    assert ptr is not None, sorted(p.name for p in point_dir.iterdir())
    assert inspect_file(point_dir / ptr["file"]) == (None, ptr["manifest_sha256"])
    if failed_tag is not None:
        assert ptr["tag"] < failed_tag
        assert not store.path(failed_tag).exists()
    tag, arrays, _ = store.load_latest(all_ranks=True)
    assert tag == ptr["tag"] and arrays
    return tag


@pytest.fixture(scope="module")
def reference(tiny_run):
    return tiny_run.campaign, tiny_run.digest, tiny_run.run_dir


@pytest.fixture
def fault_env(monkeypatch):
    """Set RGDIST_FAULT for in-process tests (rgdist.faults parses it once per process)."""
    def set_fault(value: str) -> None:
        monkeypatch.setenv("RGDIST_FAULT", value)
        faults.reset()
    yield set_fault
    monkeypatch.delenv("RGDIST_FAULT", raising=False)
    faults.reset()


# -- the message, the chain, the injection (in-process) ------------------------------------------
WHAT = {"enospc": ("no space left on device", "free space, then rgdist resume"),
        "edquot": ("disk quota exceeded", "free space or raise the quota, then rgdist resume"),
        "erofs": ("read-only file system", "remount it read-write or copy the run directory"),
        "enoent": ("the directory vanished (no such file or directory)", "restore it"),
        "eacces": ("permission denied", "make the run directory writable for this user"),
        "eio": ("input/output error", "check the storage device")}


@pytest.mark.parametrize("kind", sorted(WHAT))
def test_message_names_path_what_and_fix(tmp_path, kind):
    run = tmp_path / "run"
    (run / "points" / "p").mkdir(parents=True)
    (run / "campaign.json").write_text("{}\n")
    target = run / "points" / "p" / "ckpt-00000007.h5"
    err = StorageError(target, faults.KINDS[kind])
    what, fix = WHAT[kind]
    assert str(err).startswith(f"{target}: {what}; {fix}")
    assert str(err).endswith(f"then rgdist resume {run}")
    assert "\n" not in str(err) and err.exit_code == exitcodes.IO_ERROR == 74
    # without campaign.json (the run directory vanished) the folder above points/ is named
    assert guess_run_dir(tmp_path / "gone" / "points" / "p" / "ckpt-00000007.h5") == str(tmp_path / "gone")


def test_storage_failure_is_the_first_failure_of_the_chain():
    first = StorageError("/x/run/points/p/ckpt-00000003.h5", errno.ENOSPC)
    try:
        try:
            raise first
        except StorageError:
            raise OSError(errno.ENOSPC, "No space left on device")  # e.g. the status file after it
    except OSError as exc:
        assert storage_failure(exc) is first
    bare = storage_failure(OSError(errno.EDQUOT, "Disk quota exceeded", "/x/log"))
    assert isinstance(bare, StorageError) and bare.path == "/x/log"
    # ENOENT/EACCES from anywhere may be a user's missing input: only the write paths say storage
    assert storage_failure(FileNotFoundError(errno.ENOENT, "No such file", "/x/in.yaml")) is None
    assert storage_failure(ValueError("bug")) is None


@pytest.mark.parametrize("raw", ["ckpt_write:x", "ckpt_write:0:enospc", "ckpt_write:2:full",
                                 "ckpt_write:2:enospc:-1", ":2", "a:1:enospc:0:9"])
def test_bad_fault_spec_is_bad_input(raw):
    with pytest.raises(ConfigError, match=r"^RGDIST_FAULT: must look like site:count"):
        faults.parse(raw)


def test_fault_spec_forms():
    assert faults.parse("ckpt_write:4") == ("ckpt_write", 4, "kill", None)
    assert faults.parse("results_write:1:erofs:1") == ("results_write", 1, "erofs", 1)


def test_atomic_write_failure_removes_temp_and_names_target(tmp_path, fault_env):
    target = tmp_path / "current.json"
    target.write_bytes(b"old\n")
    fault_env("t_site:2:enospc")
    atomic_write_bytes(target, b"first\n", fault_site="t_site")
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"second\n", fault_site="t_site")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.json"]


def test_swallowed_hdf5_write_error_is_raised():
    """h5py reports a failed write at a dataset close only as 'Exception ignored in ...'."""
    class Closing:
        def __del__(self):
            raise RuntimeError("Can't decrement id ref count (file write failed: errno = 28, "
                               "error message = 'No space left on device')")

    with pytest.raises(OSError) as info:
        with surfaced_write_errors("/x/ckpt.h5.partial"):
            Closing()
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/x/ckpt.h5.partial"


@pytest.mark.parametrize("site,kind", [("ckpt_write", "edquot"), ("ckpt_pointer", "enospc"),
                                       ("ckpt_write", "enoent")])
def test_store_keeps_previous_checkpoint(tmp_path, fault_env, site, kind):
    import numpy as np

    store = CheckpointStore(tmp_path / "points" / "p", Comm.serial(), keep=2)
    fault_env(f"{site}:3:{kind}")
    for tag in (1, 2):
        store.save(tag, {"a": np.arange(10.0) + tag})
    with pytest.raises(StorageError) as info:
        store.save(3, {"a": np.arange(10.0) + 3})
    err = info.value
    assert err.errno == faults.KINDS[kind] and err.report
    name = "current.json" if site == "ckpt_pointer" else "ckpt-00000003.h5"
    assert err.path == str(store.directory / name)
    assert check_previous_checkpoint_current(store.directory, 3) == 2
    assert sorted(p.name for p in store.directory.iterdir()) == ["ckpt-00000001.h5", "ckpt-00000002.h5",
                                                                 "current.json"]


# -- the command line (serial) -------------------------------------------------------------------
slow = pytest.mark.slow  # the normal suite keeps one resumed case at a checkpoint and one at the results
CKPT_CASES = [("ckpt_write", 2, "enospc", True), ("ckpt_write", 3, "erofs", False),
              pytest.param("ckpt_pointer", 3, "enospc", True, marks=slow),
              pytest.param("ckpt_write", 5, "edquot", False, marks=slow),
              pytest.param("ckpt_write", 4, "enoent", False, marks=slow),
              pytest.param("ckpt_write", 2, "eacces", False, marks=slow)]


@pytest.mark.parametrize("site,count,kind,resume", CKPT_CASES)
def test_checkpoint_write_fault(reference, tmp_path, site, count, kind, resume):
    camp, ref_digest, _ = reference
    run = tmp_path / "run"
    out = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT=f"{site}:{count}:{kind}")
    assert out.returncode == exitcodes.IO_ERROR, (out.returncode, out.stderr[-3000:])
    m = serial_error_line(out)
    what, fix = WHAT[kind]
    assert m.group("what") == what and m.group("fix").startswith(fix), m.group(0)
    assert m.group("fix").endswith(f"rgdist resume {run}")
    path = Path(m.group("path"))
    assert path.parent.parent == run / "points"
    if site == "ckpt_pointer":
        assert path.name == "current.json"
        failed = None
    else:
        failed = int(CKPT.match(path.name).group(1))
    check_previous_checkpoint_current(path.parent, failed)
    assert leftovers(run) == []
    assert not (run / "results.h5").exists()
    if resume:  # the disk has room again
        out = rgdist(["resume", "run"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        assert digest(run) == ref_digest


def test_results_write_fault(reference, tmp_path):
    camp, ref_digest, _ = reference
    run = tmp_path / "run"
    out = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="results_write:1:enospc")
    assert out.returncode == exitcodes.IO_ERROR, (out.returncode, out.stderr[-3000:])
    m = serial_error_line(out)
    assert m.group("path") == str(run / "results.h5")
    assert m.group("what") == "no space left on device"
    assert m.group("fix") == f"free space, then rgdist resume {run}"
    assert not (run / "results.h5").exists() and leftovers(run) == []
    point_dirs = sorted((run / "points").iterdir())
    assert len(point_dirs) == 4
    for d in point_dirs:  # every point finished and checkpointed
        check_previous_checkpoint_current(d, None)
    out = rgdist(["resume", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert digest(run) == ref_digest


# -- under MPI: the failing rank tells the others ----------------------------------------------------
@slow
@needs_mpi
def test_mpi_checkpoint_fault_on_one_rank(reference, tmp_path):
    """Rank 1 alone fails (its own point's checkpoint); rank 0 is busy with another point."""
    camp, ref_digest, _ = reference
    run = tmp_path / "run"
    out = mpirun(2, ["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="ckpt_write:2:enospc:1")
    assert out.returncode == exitcodes.IO_ERROR, (out.returncode, out.stdout[-2000:] + out.stderr[-3000:])
    m = error_line(out)
    assert m.group("what") == "no space left on device"
    path = Path(m.group("path"))
    check_previous_checkpoint_current(path.parent, int(CKPT.match(path.name).group(1)))
    assert not (run / "results.h5").exists()
    out = mpirun(2, ["resume", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert digest(run) == ref_digest


@slow
@needs_mpi
def test_mpi_results_fault_on_one_rank(reference, tmp_path):
    """Rank 1 alone fails inside the collective results write (mpio with parallel h5py)."""
    camp, ref_digest, _ = reference
    run = tmp_path / "run"
    out = mpirun(2, ["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="results_write:1:enospc:1")
    assert out.returncode == exitcodes.IO_ERROR, (out.returncode, out.stdout[-2000:] + out.stderr[-3000:])
    m = error_line(out)
    assert m.group("path") == str(run / "results.h5") and m.group("what") == "no space left on device"
    assert not (run / "results.h5").exists() and not (run / "results.h5.partial").exists()
    out = rgdist(["resume", "run"], cwd=tmp_path)  # any number of ranks
    assert out.returncode == 0, out.stderr[-3000:]
    assert digest(run) == ref_digest


# -- a real full (then read-only) file system --------------------------------------------------------
def _mount(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_tmpfs(tmp_path):
    """Mount a tmpfs at tmp/run/points (after a run created the run directory)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = []

    def mount(where: Path, size: int) -> None:
        out = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        mounted.append(where)

    yield mount
    for where in mounted:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@slow
def test_real_disk_full_then_read_only(reference, tmp_path, small_tmpfs):
    camp, ref_digest, ref_dir = reference
    run = tmp_path / "run"
    killed = rgdist(["run", str(camp), "--run-dir", "run"], cwd=tmp_path, RGDIST_FAULT="hmc_traj:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    points = run / "points"
    for d in list(points.iterdir()):  # nothing checkpointed yet
        assert not any(d.iterdir()), sorted(p.name for p in d.iterdir())
    # room for the smaller early checkpoints of the first point, not for its training ones
    largest = max(p.stat().st_size for p in (ref_dir / "points").rglob("ckpt-*.h5"))
    small_tmpfs(points, (largest * 3 // 2 + 4095) // 4096 * 4096)

    out = rgdist(["resume", "run"], cwd=tmp_path)
    assert out.returncode == exitcodes.IO_ERROR, (out.returncode, out.stderr[-3000:])
    m = serial_error_line(out)
    assert m.group("what") == "no space left on device", m.group(0)
    assert m.group("fix") == f"free space, then rgdist resume {run}"
    path = Path(m.group("path"))
    assert path.parent.parent == points and CKPT.match(path.name)
    assert leftovers(run) == []
    for d in points.iterdir():
        if (d / "current.json").exists():
            check_previous_checkpoint_current(d, None)

    assert _mount("-o", "remount,ro,size=64m", str(points)).returncode == 0  # room, but read-only
    out = rgdist(["resume", "run"], cwd=tmp_path)
    assert out.returncode == exitcodes.IO_ERROR, (out.returncode, out.stderr[-3000:])
    m = serial_error_line(out)
    assert m.group("what") == "read-only file system", m.group(0)
    assert Path(m.group("path")).parent.parent == points

    assert _mount("-o", "remount,rw", str(points)).returncode == 0
    out = rgdist(["resume", "run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert digest(run) == ref_digest
