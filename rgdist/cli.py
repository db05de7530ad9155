"""The ``rgdist`` command: argparse verbs mapped to library calls (no logic here).

Exit codes (rgdist.exitcodes): 0 ok, 1 unexpected failure, 2 bad input,
73 run directory locked by another live job, 75 pre-empted (checkpointed; re-queue me).
"""
from __future__ import annotations

import argparse
import sys

from rgdist import exitcodes

EPILOG = """exit codes: 0 ok, 1 failure, 2 bad input, 73 run directory locked, 75 pre-empted (re-queue)"""


def _cmd_check_env(args) -> int:
    from rgdist.envcheck import collect, format_report

    info = collect()
    if args.json:
        import json

        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_report(info))
    return exitcodes.OK


def _cmd_validate(args) -> int:
    from rgdist.campaign.spec import load_campaign

    camp = load_campaign(args.file)
    from rgdist.campaign.diagnostics import precheck

    lines = precheck(camp)  # ConfigError (exit 2) on what no data can repair
    print(camp.summary())
    print("\n".join(lines))
    return exitcodes.OK


def _cmd_run(args) -> int:
    from rgdist.campaign.runner import run_campaign_cli

    return run_campaign_cli(campaign_file=args.campaign, run_dir=args.run_dir, resume=False,
                            points=args.points)


def _cmd_resume(args) -> int:
    from rgdist.campaign.runner import run_campaign_cli

    return run_campaign_cli(campaign_file=None, run_dir=args.run_dir, resume=True,
                            points=args.points)


def _cmd_status(args) -> int:
    from rgdist.campaign.status import print_status

    return print_status(args.run_dir)


def _cmd_aggregate(args) -> int:
    from rgdist.campaign.aggregate import aggregate_cli

    return aggregate_cli(args.run_dirs, args.output)


def _cmd_plot(args) -> int:
    from rgdist.campaign.aggregate import plot_cli

    return plot_cli(args.run_dir, args.output)


def _cmd_slurm(args) -> int:
    from rgdist.campaign.slurm import slurm_cli

    return slurm_cli(args)


def _cmd_bench(args) -> int:
    from rgdist.bench import bench_cli

    return bench_cli(args.which, args.quick)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rgdist",
        description="Renormalizing diffusion models for lattice phi^4 theory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def add(name, func, help_, example):
        sp = sub.add_parser(name, help=help_, description=help_,
                            epilog=f"example:\n  {example}\n\n{EPILOG}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=func)
        return sp

    sp = add("run", _cmd_run, "run a campaign (no file: the built-in default campaign)",
             "mpirun -n 2 rgdist run campaigns/default.yaml")
    sp.add_argument("campaign", nargs="?", help="campaign YAML file")
    sp.add_argument("--run-dir", help="run directory (default: output.dir of the campaign)")
    sp.add_argument("--points", default=None, metavar="i/K",
                    help="only the grid points with index %% K == i (SLURM job arrays)")

    sp = add("resume", _cmd_resume, "continue a campaign from its current checkpoint",
             "mpirun -n 3 rgdist resume runs/default")
    sp.add_argument("run_dir")
    sp.add_argument("--points", default=None, metavar="i/K",
                    help="only the grid points with index %% K == i (as given to run)")
    sp.set_defaults(campaign=None)

    sp = add("status", _cmd_status, "per grid point: stage, progress, last checkpoint, errors",
             "rgdist status runs/default")
    sp.add_argument("run_dir")

    sp = add("validate", _cmd_validate, "check a campaign file without running it",
             "rgdist validate campaigns/default.yaml")
    sp.add_argument("file")

    sp = add("aggregate", _cmd_aggregate,
             "collect run directories into one phase-diagram table (HDF5 + CSV) with crossings",
             "rgdist aggregate runs/scan_N8 runs/scan_N16 -o phase")
    sp.add_argument("run_dirs", nargs="+")
    sp.add_argument("-o", "--output", default=None, help="output prefix (default RUN_DIR/aggregate)")

    sp = add("plot", _cmd_plot, "draw the figures of a run directory", "rgdist plot runs/default")
    sp.add_argument("run_dir")
    sp.add_argument("-o", "--output", default=None, help="output folder (default RUN_DIR/plots)")

    sp = add("slurm", _cmd_slurm, "render (and submit) a SLURM batch script for a campaign",
             "rgdist slurm campaigns/critical_scan.yaml --nodes 2 --gpus-per-node 4 --pretend")
    sp.add_argument("campaign")
    sp.add_argument("--pretend", action="store_true", help="print the script, submit nothing")
    sp.add_argument("--array", action="store_true", help="one array task per group of grid points")
    sp.add_argument("--nodes", type=int, default=1)
    sp.add_argument("--ntasks-per-node", type=int, default=None)
    sp.add_argument("--gpus-per-node", type=int, default=0)
    sp.add_argument("--cpus-per-task", type=int, default=None)
    sp.add_argument("--time", default="01:00:00", help="HH:MM:SS or D-HH:MM:SS")
    sp.add_argument("--partition", default=None)
    sp.add_argument("--account", default=None)
    sp.add_argument("--max-requeues", type=int, default=3)
    sp.add_argument("--run-dir", default=None)

    sp = add("check-env", _cmd_check_env, "report MPI, HDF5, torch, CUDA and threads",
             "mpirun -n 2 rgdist check-env")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--brief", action="store_true", help="accepted for scripts; same output")

    sp = add("bench", _cmd_bench, "run a benchmark script and print its JSON",
             "rgdist bench hmc --quick")
    sp.add_argument("which", choices=["hmc", "sampler", "campaign", "vs_hmc"])
    sp.add_argument("--quick", action="store_true")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad flags, 0 on --help
        return int(exc.code or 0)
    if args.verb is None:
        parser.print_help()
        return exitcodes.BAD_INPUT
    from rgdist.errors import ConfigError, RunLockedError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.LOCKED
    except KeyboardInterrupt:
        return 130
