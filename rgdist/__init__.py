"""rgdist: renormalizing diffusion models for lattice scalar phi^4 theory.

Layers (imports point downwards only)::

    cli                  argparse verbs -> library calls
    campaign             spec, runner, slurm, signals, aggregate
    io, parallel         h5py only in io; mpi4py only in parallel.comm
    train, sample, flow  score matching, solvers, RG-flow measurements
    models               score networks and their registry
    lattice, rg, measure physics core (torch + numpy only)
"""

__version__ = "0.1.0"
