"""Shared fixtures (keep minimal)."""
import pytest

from rgdist.parallel.comm import Comm


@pytest.fixture
def serial_comm() -> Comm:
    """The single-process communicator (never touches MPI)."""
    return Comm.serial()
