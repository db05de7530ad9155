#!/usr/bin/env bash
# Set everything up, then run the default campaign at 2 MPI ranks and aggregate it.
#   RGDIST_RANKS=N   number of MPI ranks (default 2)
#   extra arguments go to `rgdist run` (e.g. a campaign file)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
source scripts/mpienv.sh
py="${RGDIST_VENV:-$here/.venv}/bin/python"
ranks="${RGDIST_RANKS:-2}"
mpirun -n "$ranks" "$py" -m mpi4py -m rgdist run "$@"
