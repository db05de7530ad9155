"""The ``rgdist`` command: argparse verbs mapped to library calls (no logic here).

Exit codes (rgdist.exitcodes): 0 ok, 1 unexpected failure, 2 bad input,
73 run directory locked by another live job, 74 a checkpoint or results write failed
(disk full, quota, read-only, vanished directory; resume once fixed),
75 pre-empted (checkpointed; re-queue me).
"""
from __future__ import annotations

import argparse
import sys

from rgdist import exitcodes

EPILOG = """exit codes: 0 ok, 1 failure, 2 bad input, 73 run directory locked,
  74 write failed (disk full, quota, read-only, vanished directory), 75 pre-empted (re-queue)"""


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


def _run_and_report(campaign_file, run_dir, resume, points) -> int:
    """`rgdist run` / `rgdist resume`: the campaign runner, then (root rank) the end-of-run
    report on stdout or the pre-emption note on stderr."""
    from rgdist.campaign.report import format_run_report, preempted_text
    from rgdist.campaign.runner import run_from_cli

    out = run_from_cli(campaign_file=campaign_file, run_dir=run_dir, resume=resume, points=points)
    if out["status"] == "preempted":
        if out["root"]:
            print(preempted_text(out["run_dir"]), file=sys.stderr)
    elif out["report"] is not None:
        print(format_run_report(out["report"]))
    return out["exit_code"]


def _cmd_run(args) -> int:
    if args.campaign is not None:
        return _run_and_report(args.campaign, args.run_dir, False, args.points)
    from rgdist import campaigns

    with campaigns.as_file(campaigns.DEFAULT) as default:  # the packaged default, from any directory
        return _run_and_report(str(default), args.run_dir, False, args.points)


def _cmd_campaigns(args) -> int:
    from rgdist import campaigns

    if args.copy is not None:
        target = campaigns.copy_to(args.copy, ".")
        print(f"wrote {target}  (check it: rgdist validate {target.name}; run it: rgdist run {target.name})")
        return exitcodes.OK
    rows = campaigns.listing()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    print(f"\n`rgdist campaigns --copy NAME` writes NAME.yaml here; `rgdist run` alone runs {campaigns.DEFAULT}")
    return exitcodes.OK


def _cmd_resume(args) -> int:
    return _run_and_report(None, args.run_dir, True, args.points)


def _cmd_status(args) -> int:
    from rgdist.campaign.status import print_status

    return print_status(args.run_dir)


def _cmd_aggregate(args) -> int:
    from rgdist.campaign.aggregate import aggregate_cli

    return aggregate_cli(args.run_dirs, args.output, args.m2_range)


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

    sp = add("run", _cmd_run, "run a campaign (no file: the packaged default campaign)",
             "mpirun -n 2 rgdist run campaigns/default.yaml")
    sp.add_argument("campaign", nargs="?",
                    help="campaign YAML file (default: the packaged default.yaml, see `rgdist campaigns`)")
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

    sp = add("campaigns", _cmd_campaigns, "list the shipped campaign files, or copy one here to edit",
             "rgdist campaigns --copy critical_scan")
    sp.add_argument("--copy", metavar="NAME", default=None,
                    help="write the shipped campaign NAME(.yaml) into the current directory (never overwrites)")

    sp = add("validate", _cmd_validate, "check a campaign file without running it",
             "rgdist validate campaigns/default.yaml")
    sp.add_argument("file")

    sp = add("aggregate", _cmd_aggregate,
             "collect run directories into one phase-diagram table (HDF5 + CSV) with crossings",
             "rgdist aggregate runs/scan_N8 runs/scan_N16 -o phase")
    sp.add_argument("run_dirs", nargs="+")
    sp.add_argument("-o", "--output", default=None, help="output prefix (default RUN_DIR/aggregate)")
    sp.add_argument("--m2-range", default=None, metavar="LO:HI",
                    help="m2 range of the reweighted curves (default: the sampled range, "
                         "unsupported targets skipped); a range the data do not support is exit 2")

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
    from rgdist.errors import ConfigError, RunLockedError, StorageError, storage_failure

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
    except Exception as exc:
        # a failing file system (disk full, quota, read-only, vanished directory): one line
        # with the path and the fix; for run/resume also an OSError raised anywhere in the run
        if args.verb in ("run", "resume"):
            failure = storage_failure(exc)
        else:
            failure = exc if isinstance(exc, StorageError) else None
        if failure is None:
            raise
        if failure.report:
            print(f"error: {failure}", file=sys.stderr)
        if failure.unclean and argv is None:  # the process entry point (not an in-process call):
            import os  # end without finalization, which would free an HDF5 handle HDF5 cannot close

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exitcodes.IO_ERROR)
        return exitcodes.IO_ERROR
