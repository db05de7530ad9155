#!/usr/bin/env bash
# Set up if needed, then run the whole test suite: serial (unit + e2e), then MPI at 2 ranks.
#   RGDIST_TEST_SLOW=1   also run the long statistical tests (marked slow)
#   extra arguments are passed to the serial pytest run
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
source scripts/mpienv.sh
py="${RGDIST_VENV:-$here/.venv}/bin/python"

marker="not slow"
[ "${RGDIST_TEST_SLOW:-0}" = 1 ] && marker=""

echo "== serial tests =="
"$py" -m pytest -q -p no:cacheprovider ${marker:+-m "$marker"} tests "$@"

echo "== MPI tests (mpirun -n 2) =="
timeout 1200 mpirun -n 2 "$py" -m mpi4py -m pytest -q -p no:cacheprovider --with-mpi \
  ${marker:+-m "$marker"} tests/mpi
