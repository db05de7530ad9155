# Sourced by the scripts: let Open MPI run as root in containers/CI and oversubscribe cores.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# one compute thread per rank unless the caller says otherwise
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
