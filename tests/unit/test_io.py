"""Storage and distribution layers, serial: atomic writes, HDF5 helpers, Comm fallback, device.

(MPI behaviour is tested in tests/mpi/.)
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rgdist.errors import RgdistError
from rgdist.io import h5
from rgdist.io.atomic import atomic_write_bytes, atomic_write_json, read_json
from rgdist.parallel.comm import run_guarded
from rgdist.parallel.device import available_cores, choose_device, configure_threads

REPO = Path(__file__).resolve().parents[2]


# -- atomic writes --------------------------------------------------------------------------------
def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1, "b": [1, 2]})
    atomic_write_json(target, {"x": 2, "s": "é"})
    assert read_json(target) == {"x": 2, "s": "é"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o644 & ~umask)


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "b.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_atomic_write_json_rejects_unserialisable_before_touching_file(tmp_path):
    target = tmp_path / "c.json"
    atomic_write_json(target, [1])
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert json.loads(target.read_text()) == [1]


# -- checksums -----------------------------------------------------------------------------------
def test_array_checksum_sees_one_bit_dtype_shape_but_not_byte_order():
    a = np.linspace(0.0, 1.0, 12)
    base = h5.array_checksum(a)
    flipped = a.copy()
    flipped.view(np.uint8)[37] ^= 1
    assert h5.array_checksum(flipped) != base
    assert h5.array_checksum(a.reshape(3, 4)) != base
    assert h5.array_checksum(a.astype(np.float32)) != base
    assert h5.array_checksum(a.astype(">f8")) == base
    assert h5.array_checksum(a[::-1][::-1]) == base


# -- h5 helpers -------------------------------------------------------------------------------------
def _sample_arrays():
    rng = np.random.default_rng(7)
    return {
        "model/w": rng.normal(size=(3, 4)),
        "model/b32": rng.normal(size=5).astype(np.float32),
        "phi_k": rng.normal(size=4) + 1j * rng.normal(size=4),
        "mask": np.array([True, False, True]),
        "rng/state": rng.integers(0, 256, size=16, dtype=np.uint8),
        "step": np.array(17, dtype=np.int64),
        "empty": np.zeros((0, 3)),
    }


def test_write_owned_read_back_and_layout(tmp_path, serial_comm):
    arrays = _sample_arrays()
    path = tmp_path / "f.h5"
    with h5.open_h5(path, "w", serial_comm) as f:
        meta = h5.write_owned(f, arrays, serial_comm, group="g")
        h5.write_attrs(f, {"name": "φ⁴ run", "L": 16, "m2": -0.5, "ok": True,
                           "labels": ["a", "βeta"], "grid": [0.1, 0.2]}, serial_comm)
    assert set(meta) == set(arrays)
    with h5.open_h5(path, "r", serial_comm) as f:
        back = h5.read_arrays(f, "g")
        attrs = h5.read_attrs(f)
        stored_sums = {n: h5.read_attrs(f["g"][n])["sha256"] for n in arrays}
    assert set(back) == set(arrays)
    for n, a in arrays.items():
        assert back[n].dtype == a.dtype and back[n].shape == a.shape
        np.testing.assert_array_equal(back[n], a)
        assert stored_sums[n] == h5.array_checksum(a) == meta[n]["sha256"]
    assert attrs == {"rgdist_layout": h5.LAYOUT_VERSION, "name": "φ⁴ run", "L": 16, "m2": -0.5, "ok": True,
                     "labels": ["a", "βeta"], "grid": [0.1, 0.2]}


def test_write_rows_serial_and_text_roundtrip(tmp_path, serial_comm):
    rows = np.arange(12.0).reshape(4, 3)
    path = tmp_path / "r.h5"
    with h5.open_h5(path, "w", serial_comm) as f:
        assert h5.write_rows(f, "samples", rows, serial_comm) == (0, (4, 3))
        h5.write_owned(f, {"config": h5.encode_str("lam: 0.5  # λ")}, serial_comm)
    with h5.open_h5(path, "r", serial_comm) as f:
        got = h5.read_arrays(f)
    np.testing.assert_array_equal(got["samples"], rows)
    assert h5.decode_str(got["config"]) == "lam: 0.5  # λ"


@pytest.mark.parametrize("arrays, match", [
    ({"/abs": np.zeros(2)}, "array name"),
    ({"a//b": np.zeros(2)}, "array name"),
    ({"../up": np.zeros(2)}, "array name"),
    ({"text": np.array(["x", "y"])}, "dtype"),
    ({"obj": np.array([{}, 1], dtype=object)}, "dtype"),
])
def test_write_owned_rejects_bad_input(tmp_path, serial_comm, arrays, match):
    with h5.open_h5(tmp_path / "bad.h5", "w", serial_comm) as f:
        with pytest.raises(ValueError, match=match):
            h5.write_owned(f, arrays, serial_comm)


def test_bad_attrs_and_arguments(tmp_path, serial_comm):
    with h5.open_h5(tmp_path / "x.h5", "w", serial_comm) as f:
        with pytest.raises(ValueError, match=r"attrs\['cfg'\]"):
            h5.write_attrs(f, {"cfg": {"a": 1}}, serial_comm)
    with pytest.raises(ValueError, match="mode"):
        h5.open_h5(tmp_path / "y.h5", "rw", serial_comm)
    with pytest.raises(ValueError, match="driver"):
        h5.open_h5(tmp_path / "y.h5", "w", serial_comm, driver="posix")
    with pytest.raises(RgdistError, match="mpio"):
        h5.open_h5(tmp_path / "y.h5", "w", serial_comm, driver="mpio")


def test_newer_layout_is_refused(tmp_path, serial_comm):
    path = tmp_path / "new.h5"
    with h5.open_h5(path, "w", serial_comm) as f:
        h5.write_attrs(f, {"rgdist_layout": 99}, serial_comm)
    with pytest.raises(RgdistError, match="layout version 99"):
        h5.open_h5(path, "r", serial_comm)


def test_resolve_driver(serial_comm):
    assert h5.resolve_driver(serial_comm) == "serial"
    assert h5.resolve_driver(serial_comm, "serial") == "serial"


# -- serial fallback ---------------------------------------------------------------------------
def test_serial_comm_is_identity(serial_comm):
    c = serial_comm
    assert (c.rank, c.size, c.is_root, c.local_rank, c.local_size, c.mpi_comm) == (0, 1, True, 0, 1, None)
    a = np.arange(6.0).reshape(2, 3)
    out = c.allreduce_sum(a)
    np.testing.assert_array_equal(out, a)
    out[0, 0] = 99.0
    assert a[0, 0] == 0.0, "reductions return a new array"
    assert c.bcast({"k": (1, 2)}) == {"k": [1, 2]}  # JSON semantics, as under MPI
    assert c.allgather("x") == ["x"]
    assert c.any_true(True) and not c.any_true(False)
    assert c.split(3).size == 1
    got = c.gather_arrays({"a": a})
    np.testing.assert_array_equal(got[0]["a"], a)
    c.barrier()


def test_serial_comm_rejects_bad_input(serial_comm):
    with pytest.raises(ValueError, match="JSON"):
        serial_comm.bcast({"x": object()})
    with pytest.raises(ValueError, match="root"):
        serial_comm.bcast(1, root=1)
    with pytest.raises(ValueError, match="color"):
        serial_comm.split(-1)
    with pytest.raises(SystemExit):
        serial_comm.abort(3)


def test_run_guarded_serial_reraises(serial_comm):
    assert run_guarded(lambda: 42, serial_comm) == 42
    with pytest.raises(ZeroDivisionError):
        run_guarded(lambda: 1 / 0, serial_comm)


def test_no_mpi_env_gives_serial_world_without_importing_mpi4py():
    code = ("import sys; from rgdist.parallel.comm import world, mpi_info; c = world(); "
            "print(c.size, c.mpi_comm is None, 'mpi4py' in sys.modules, mpi_info()['available'])")
    env = {**os.environ, "RGDIST_NO_MPI": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "True", "False", "False"], out.stderr


# -- device and threads --------------------------------------------------------------------------
def test_choose_device(monkeypatch):
    monkeypatch.delenv("RGDIST_DEVICE", raising=False)
    assert choose_device(3, "cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="policy"):
        choose_device(0, "gpu")
    with pytest.raises(ValueError, match="local_rank"):
        choose_device(-1)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert choose_device(n + 1) == torch.device("cuda", (n + 1) % n)
    else:
        assert choose_device(1, "auto") == torch.device("cpu")
        with pytest.raises(RgdistError, match="cuda"):
            choose_device(0, "cuda")
    monkeypatch.setenv("RGDIST_DEVICE", "cpu")
    assert choose_device(0, "cuda") == torch.device("cpu")


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("RGDIST_NUM_THREADS", raising=False)
    try:
        cores = available_cores()
        assert configure_threads(1) == cores == torch.get_num_threads()
        assert configure_threads(cores + 5) == 1
        if cores >= 2:
            assert configure_threads(2) == cores // 2
        monkeypatch.setenv("RGDIST_NUM_THREADS", "3")
        assert configure_threads(1) == 3 == torch.get_num_threads()
        monkeypatch.setenv("RGDIST_NUM_THREADS", "zero")
        with pytest.raises(ValueError, match="RGDIST_NUM_THREADS"):
            configure_threads(1)
        with pytest.raises(ValueError, match="ranks_on_node"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)
