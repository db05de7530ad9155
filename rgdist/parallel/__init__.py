"""Distribution layer: communicators (mpi4py lives only in ``comm``) and device choice.

Importing this package imports neither mpi4py nor torch; both load on first use.
"""
from rgdist.parallel.comm import Comm, mpi_info, run_guarded, world
from rgdist.parallel.device import choose_device, configure_threads

__all__ = ["Comm", "world", "mpi_info", "run_guarded", "choose_device", "configure_threads"]
