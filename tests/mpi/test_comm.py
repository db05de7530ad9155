"""Comm under MPI: ``mpirun -n 2 python -m mpi4py -m pytest --with-mpi tests/mpi/test_comm.py``.

(pytest-mpi treats every test below a directory named ``mpi`` as MPI-marked, so the serial
Comm/device tests live in tests/unit/test_io.py.)
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rgdist.parallel.comm import mpi_info, world
from rgdist.seeding import seed_sequence

REPO = Path(__file__).resolve().parents[2]


# -- MPI ---------------------------------------------------------------------------------------------
def _accumulators(rank: int) -> dict:
    """Accumulator-like partial sums of one rank's share of samples (seeded per rank)."""
    rng = np.random.default_rng(seed_sequence(1234, "test-comm", rank))
    x = rng.normal(size=(100 + 37 * rank, 4, 4))
    m = x.mean(axis=(1, 2))
    return {
        "count": np.array([x.shape[0]], dtype=np.int64),
        "sum_m": np.array([m.sum(), (m ** 2).sum(), (m ** 4).sum()]),
        "power": (np.abs(np.fft.fftn(x, axes=(1, 2))) ** 2).sum(axis=0),
        "hist": np.histogram(m, bins=8, range=(-0.5, 0.5))[0].astype(np.int64),
        "complex": np.fft.fftn(x, axes=(1, 2)).sum(axis=0),
    }


@pytest.mark.mpi(min_size=2)
def test_world_properties_and_info():
    c = world()
    assert c.size >= 2 and 0 <= c.rank < c.size and c.mpi_comm is not None
    assert c.is_root == (c.rank == 0)
    ranks = c.allgather([c.rank, c.local_rank, c.local_size])
    assert [r[0] for r in ranks] == list(range(c.size))
    assert sum(r[2] == c.size for r in ranks) == c.size  # one node here: local == world
    assert sorted(r[1] for r in ranks) == list(range(c.size))
    info = mpi_info()
    assert info["available"] and info["world_size"] == c.size and info["library"]


@pytest.mark.mpi(min_size=2)
def test_allreduce_of_accumulators_equals_serial_sum():
    c = world()
    mine = _accumulators(c.rank)
    reference = {k: sum(_accumulators(r)[k] for r in range(c.size)) for k in mine}
    for k, v in mine.items():
        got = c.allreduce_sum(v)
        assert got.dtype == v.dtype and got.shape == v.shape
        if v.dtype.kind == "i":
            np.testing.assert_array_equal(got, reference[k])
        else:  # only the summation order may differ
            np.testing.assert_allclose(got, reference[k], rtol=1e-13, atol=1e-12)
    mx = c.allreduce_max(np.array([c.rank, -c.rank], dtype=np.float64))
    np.testing.assert_array_equal(mx, [c.size - 1, 0])


@pytest.mark.mpi(min_size=2)
def test_bcast_allgather_any_true_gather():
    c = world()
    obj = {"seed": 7, "grid": [0.1, 0.2], "name": "φ"} if c.rank == 0 else None
    assert c.bcast(obj) == {"seed": 7, "grid": [0.1, 0.2], "name": "φ"}
    assert c.bcast(c.rank * 10, root=1) == 10
    assert c.allgather({"r": c.rank}) == [{"r": r} for r in range(c.size)]
    assert c.any_true(c.rank == c.size - 1)
    assert not c.any_true(False)
    parts = c.gather_arrays({"x": np.full((c.rank + 1, 2), c.rank, dtype=np.float32),
                             "empty": np.zeros(0)})
    if c.is_root:
        assert len(parts) == c.size
        for r, p in enumerate(parts):
            np.testing.assert_array_equal(p["x"], np.full((r + 1, 2), r, dtype=np.float32))
            assert p["empty"].shape == (0,)
    else:
        assert parts is None


@pytest.mark.mpi(min_size=2)
def test_split_into_groups_and_reduce_within():
    c = world()
    sub = c.split(c.rank % 2)
    members = [r for r in range(c.size) if r % 2 == c.rank % 2]
    assert sub.size == len(members) and sub.rank == members.index(c.rank)
    total = sub.allreduce_sum(np.array([c.rank]))
    assert total[0] == sum(members)
    rev = c.split(0, key=-c.rank)
    assert rev.rank == c.size - 1 - c.rank
    sub.free()
    rev.free()
    assert sub.mpi_comm is None


@pytest.mark.mpi(min_size=2)
def test_run_guarded_aborts_all_ranks(tmp_path):
    """A failing rank under run_guarded takes the whole job down instead of hanging it."""
    if world().rank != 0:
        return
    code = ("from rgdist.parallel.comm import world, run_guarded\n"
            "c = world()\n"
            "def work():\n"
            "    if c.rank == 1: raise RuntimeError('boom on one rank')\n"
            "    c.barrier()\n"
            "run_guarded(work, c)\n")
    script = tmp_path / "guarded.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env.update(PYTHONPATH=str(REPO), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    out = subprocess.run(["mpirun", "-n", "2", sys.executable, str(script)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "[rank 1/2]" in out.stderr and "boom on one rank" in out.stderr


@pytest.mark.mpi(min_size=2)
def test_allgather_arrays_gives_every_rank_all_named_arrays():
    from rgdist.parallel.comm import world

    comm = world()
    mine = {f"r{comm.rank}/x": np.arange(comm.rank + 3, dtype=np.float64) * 0.5,
            f"r{comm.rank}/s": np.int64(comm.rank)}
    parts = comm.allgather_arrays(mine)
    assert len(parts) == comm.size
    for r, part in enumerate(parts):
        np.testing.assert_array_equal(part[f"r{r}/x"], np.arange(r + 3) * 0.5)
        assert part[f"r{r}/s"].shape == () and int(part[f"r{r}/s"]) == r
