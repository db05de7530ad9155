"""Collective HDF5 writes and checkpoints at >= 2 ranks:
``mpirun -n 2 python -m mpi4py -m pytest --with-mpi tests/mpi/test_parallel_h5.py``.
"""
import json

import numpy as np
import pytest

from rgdist.errors import CheckpointError
from rgdist.io import h5
from rgdist.io.checkpoint import CheckpointStore, inspect_file
from rgdist.parallel.comm import Comm, world

needs_mpio = pytest.mark.skipif(not h5.h5_parallel_available(), reason="h5py built without MPI")


def _shared_dir(comm, tmp_path_factory, name):
    """One directory name for all ranks (rank 0 creates it, the path is broadcast)."""
    path = str(tmp_path_factory.mktemp(name)) if comm.is_root else None
    return comm.bcast(path)


def _rows(rank):
    return np.arange(3 * (rank + 1) * 4, dtype=np.float64).reshape(-1, 4) + 1000 * rank


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("driver", ["mpio", "serial"])
def test_rows_and_owned_datasets_written_per_rank_read_back_everywhere(tmp_path_factory, driver):
    comm = world()
    if driver == "mpio" and not h5.h5_parallel_available():
        pytest.skip("h5py built without MPI")
    path = f"{_shared_dir(comm, tmp_path_factory, 'h5' + driver)}/f.h5"
    f = h5.open_h5(path, "w", comm, driver=driver)
    assert h5.is_collective(f) == (driver == "mpio")
    assert (f is None) == (driver == "serial" and not comm.is_root)
    offset, gshape = h5.write_rows(f, "samples", _rows(comm.rank), comm)
    owned = {f"rank{comm.rank}/phi": np.full((2, 2), comm.rank, dtype=np.int32)}
    if comm.is_root:
        owned["model/w"] = np.linspace(0, 1, 5)
    meta = h5.write_owned(f, owned, comm, group="state")
    h5.write_attrs(f, {"ranks": comm.size, "who": f"rank {comm.rank}"}, comm)
    if f is not None:
        f.close()
    comm.barrier()
    expected_rows = np.concatenate([_rows(r) for r in range(comm.size)])
    assert offset == sum(_rows(r).shape[0] for r in range(comm.rank))
    assert gshape == expected_rows.shape
    assert sorted(meta) == sorted(["model/w", *(f"rank{r}/phi" for r in range(comm.size))])
    with h5.open_h5(path, "r", comm) as g:  # every rank reads the whole file
        got = h5.read_arrays(g)
        attrs = h5.read_attrs(g)
        sums = {n: h5.read_attrs(g["state"][n])["sha256"] for n in meta}
    np.testing.assert_array_equal(got["samples"], expected_rows)
    for r in range(comm.size):
        np.testing.assert_array_equal(got[f"state/rank{r}/phi"], np.full((2, 2), r, dtype=np.int32))
    np.testing.assert_array_equal(got["state/model/w"], np.linspace(0, 1, 5))
    assert attrs == {"rgdist_layout": h5.LAYOUT_VERSION, "ranks": comm.size, "who": "rank 0"}  # rank 0's value
    assert sums == {n: m["sha256"] for n, m in meta.items()}


@pytest.mark.mpi(min_size=2)
@needs_mpio
def test_parallel_h5py_is_really_parallel():
    assert h5.h5_info()["h5py_mpi"] is True
    assert h5.resolve_driver(world()) == "mpio"


@pytest.mark.mpi(min_size=2)
def test_inconsistent_names_raise_on_every_rank(tmp_path_factory):
    comm = world()
    path = f"{_shared_dir(comm, tmp_path_factory, 'bad')}/b.h5"
    f = h5.open_h5(path, "w", comm)
    try:
        with pytest.raises(ValueError, match="given by ranks 0 and 1"):
            h5.write_owned(f, {"same": np.zeros(2)} if comm.rank < 2 else {}, comm)
        with pytest.raises(ValueError, match="rank 1: array name"):
            h5.write_owned(f, {"/bad": np.zeros(2)} if comm.rank == 1 else {}, comm)
    finally:
        if f is not None:
            f.close()


def _ckpt_arrays(comm, tag):
    rng = np.random.default_rng([tag, comm.rank])
    arrays = {f"rank{comm.rank}/hmc/phi": rng.normal(size=(3, 4, 4)),
              f"rank{comm.rank}/rng": rng.integers(0, 256, 16, dtype=np.uint8)}
    shared = {"model/w": np.random.default_rng(tag).normal(size=(8, 8)), "step": np.array(tag)}
    arrays.update(shared)  # every rank passes the shared arrays; rank 0's copy is stored
    return arrays


def _check_loaded(comm, got, tag, all_ranks=False):
    assert got is not None
    t, arrays, attrs = got
    assert t == tag and attrs == {"stage": "hmc", "tag": tag, "cfg": {"L": 4}}
    mine = _ckpt_arrays(comm, tag)
    expected = {n for n in mine}
    if all_ranks:
        expected |= {f"rank{r}/{k}" for r in range(comm.size) for k in ("hmc/phi", "rng")}
    assert set(arrays) == expected
    for n, a in mine.items():
        np.testing.assert_array_equal(arrays[n], a)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("driver", ["auto", "serial"])
def test_checkpoint_collective_round_trip_and_fallback(tmp_path_factory, driver):
    comm = world()
    directory = _shared_dir(comm, tmp_path_factory, f"ck-{driver}")
    store = CheckpointStore(directory, comm, keep=2, driver=driver)
    assert store.load_latest() is None
    for tag in (1, 2, 3):
        ptr = store.save(tag, _ckpt_arrays(comm, tag), {"stage": "hmc", "tag": tag, "cfg": {"L": 4}})
        assert ptr["tag"] == tag and ptr["writer_size"] == comm.size
    assert store.tags() == [2, 3]
    _check_loaded(comm, store.load_latest(), 3)
    _check_loaded(comm, store.load_latest(all_ranks=True), 3, all_ranks=True)
    if comm.is_root:  # tear the current file: everyone must fall back to tag 2
        raw = bytearray(store.path(3).read_bytes())
        store.path(3).write_bytes(bytes(raw[: len(raw) // 2]))
    comm.barrier()
    _check_loaded(comm, store.load_latest(), 2)
    if comm.is_root:
        store.path(2).unlink()
    comm.barrier()
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        store.load_latest()


@pytest.mark.mpi(min_size=2)
@needs_mpio
def test_serial_fallback_writes_the_same_layout_as_mpio(tmp_path_factory):
    comm = world()
    contents = {}
    for driver in ("mpio", "serial"):
        directory = _shared_dir(comm, tmp_path_factory, f"same-{driver}")
        store = CheckpointStore(directory, comm, driver=driver)
        store.save(7, _ckpt_arrays(comm, 7), {"stage": "hmc", "tag": 7, "cfg": {"L": 4}})
        if comm.is_root:
            path = store.path(7)
            assert inspect_file(path)[0] is None
            with h5.open_h5(path, "r", Comm.serial()) as f:
                attrs = h5.read_attrs(f)
                arrays = h5.read_arrays(f)
                ds_attrs = {n: h5.read_attrs(f[n]) for n in h5.dataset_names(f)}
            attrs.pop("created")
            contents[driver] = (attrs, {n: (a.dtype.str, a.shape, h5.array_checksum(a)) for n, a in arrays.items()},
                                ds_attrs)
    if comm.is_root:
        assert contents["mpio"] == contents["serial"]
        names = set(contents["mpio"][1])
        assert {f"arrays/rank{r}/hmc/phi" for r in range(comm.size)} <= names
        assert json.loads(contents["mpio"][0]["manifest_json"]).keys() == {n[len("arrays/"):] for n in names}


@pytest.mark.mpi(min_size=2)
def test_shared_array_missing_on_rank0_is_an_error_everywhere(tmp_path_factory):
    comm = world()
    store = CheckpointStore(_shared_dir(comm, tmp_path_factory, "lost"), comm)
    arrays = {f"rank{comm.rank}/x": np.zeros(2)}
    if comm.rank == 1:
        arrays["ema/w"] = np.ones(3)  # forgot the rank prefix: would silently vanish
    with pytest.raises(ValueError, match=r"passed by rank 1 but not by rank 0"):
        store.save(1, arrays, {})
    assert store.load_latest() is None
