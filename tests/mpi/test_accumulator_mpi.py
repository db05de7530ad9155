"""Accumulators merged across ranks with Allreduce give the one-process answer."""
import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice
from rgdist.measure import ObservableAccumulator
from rgdist.parallel.comm import world


@pytest.mark.mpi(min_size=2)
def test_allreduce_of_accumulators_equals_serial_pass():
    comm = world()
    lat = Lattice((6, 6))
    G = 1.0 / (lat.phat2() + 0.3)
    data = lat.colored_noise(G, 400, torch.Generator().manual_seed(3)) + 0.2  # same on every rank
    bins = torch.arange(400) % 10
    serial = ObservableAccumulator(lat, 10).update(data, bins).estimate()
    mine = torch.arange(comm.rank, 400, comm.size)
    local = ObservableAccumulator(lat, 10).update(data[mine], bins[mine]).to_arrays()
    merged = {k: (comm.allreduce_max(v) if ObservableAccumulator.REDUCTIONS[k] == "max"
                  else comm.allreduce_sum(v)) for k, v in local.items()}
    est = ObservableAccumulator.from_arrays(lat, merged).estimate()
    for name, (value, err) in serial.items():
        np.testing.assert_allclose(est[name][0], value, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(est[name][1], err, rtol=1e-10, atol=1e-14, equal_nan=True, err_msg=name)
