#!/usr/bin/env bash
# One-command setup for rgdist.
#   - On Debian/Ubuntu as root: installs OpenMPI + parallel HDF5 from apt when no MPI
#     compiler wrapper / parallel HDF5 is found (on clusters: `module load` them first).
#   - Creates a virtual environment (default .venv, override with RGDIST_VENV).
#   - Installs torch (CPU wheel pinned), mpi4py, h5py built against parallel HDF5
#     (wheel cached in RGDIST_WHEEL_CACHE, default ~/.cache/rgdist/wheels), and rgdist.
# Idempotent: a second run takes seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RGDIST_VENV:-$here/.venv}"
cache="${RGDIST_WHEEL_CACHE:-$HOME/.cache/rgdist/wheels}"
torch_spec="${RGDIST_TORCH_SPEC:-torch==2.13.0}"
h5py_version="3.16.0"
log() { printf '[setup] %s\n' "$*"; }

find_parallel_hdf5() {
  # Prints the HDF5 prefix of a parallel build, or nothing.
  if [ -n "${HDF5_DIR:-}" ] && [ -f "$HDF5_DIR/include/H5pubconf.h" ] \
     && grep -q 'define H5_HAVE_PARALLEL 1' "$HDF5_DIR/include/H5pubconf.h"; then
    echo "$HDF5_DIR"; return
  fi
  if command -v dpkg-architecture >/dev/null 2>&1; then
    local p="/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/hdf5/openmpi"
    if [ -f "$p/include/H5pubconf.h" ]; then echo "$p"; return; fi
  fi
  if command -v h5pcc >/dev/null 2>&1; then
    local inc
    inc=$(h5pcc -showconfig 2>/dev/null | awk -F: '/Installation point/{gsub(/ /,"",$2); print $2}')
    if [ -n "$inc" ] && [ -f "$inc/include/H5pubconf.h" ]; then echo "$inc"; return; fi
  fi
}

# 1. System libraries (MPI + parallel HDF5) -----------------------------------------
hdf5_dir="$(find_parallel_hdf5 || true)"
if ! command -v mpicc >/dev/null 2>&1 || [ -z "$hdf5_dir" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing OpenMPI and parallel HDF5 from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev \
      libhdf5-openmpi-dev pkg-config dpkg-dev >/dev/null
    hdf5_dir="$(find_parallel_hdf5 || true)"
  else
    echo "[setup] error: need an MPI compiler wrapper (mpicc) and a parallel HDF5." >&2
    echo "[setup] On a cluster: 'module load' an MPI and a parallel HDF5, or set HDF5_DIR." >&2
    exit 1
  fi
fi
[ -n "$hdf5_dir" ] || { echo "[setup] error: no parallel HDF5 found (set HDF5_DIR)" >&2; exit 1; }

# 2. Virtual environment ----------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pipi() { "$py" -m pip install -q --disable-pip-version-check "$@"; }
have() { "$py" -c "import $1" >/dev/null 2>&1; }

pipi --upgrade "pip>=23" "setuptools>=77" wheel
have torch || { log "installing $torch_spec (CPU)"; pipi "$torch_spec"; }
pipi numpy pyyaml "pytest>=8" "pytest-mpi>=0.6" "pytest-timeout" matplotlib tqdm
have mpi4py || pipi "mpi4py>=4"

# 3. h5py against parallel HDF5, wheel cached ------------------------------------
if ! "$py" -c "import h5py,sys; sys.exit(0 if h5py.get_config().mpi else 1)" >/dev/null 2>&1; then
  mkdir -p "$cache"
  tag="h5py-$h5py_version-mpi-$(basename "$(dirname "$hdf5_dir")")-$("$py" -c 'import sys;print("py%d%d"%sys.version_info[:2])')"
  wheel="$(ls "$cache/$tag"/h5py-*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    log "building h5py $h5py_version against parallel HDF5 in $hdf5_dir (1-5 min, once)"
    pipi "Cython>=3,<4" pkgconfig
    cfg="$(mktemp)"; printf '[build_ext]\nparallel = %s\n' "$(nproc --all)" > "$cfg"
    mkdir -p "$cache/$tag"
    HDF5_MPI=ON CC=mpicc HDF5_DIR="$hdf5_dir" CFLAGS="-O1" DIST_EXTRA_CONFIG="$cfg" \
      "$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-binary=h5py \
      --no-build-isolation -w "$cache/$tag" "h5py==$h5py_version"
    rm -f "$cfg"
    wheel="$(ls "$cache/$tag"/h5py-*.whl | head -1)"
  fi
  pipi --force-reinstall --no-deps "$wheel"
fi

# 4. The package itself -------------------------------------------------------------
pipi --no-build-isolation --no-deps -e "$here"

# 5. Report -----------------------------------------------------------------------
"$py" -m rgdist check-env || true
log "ready: $venv"
