"""Storage layer: atomic files, run-directory lock, HDF5 (h5py lives only here), checkpoints.

``rgdist.io.h5`` and ``rgdist.io.checkpoint`` import h5py; import them explicitly.  This
package itself imports only what works without h5py.
"""
from rgdist.io.atomic import atomic_write_bytes, atomic_write_json, read_json
from rgdist.io.lock import RunLock, RunLockedError

__all__ = ["atomic_write_bytes", "atomic_write_json", "read_json", "RunLock", "RunLockedError"]
