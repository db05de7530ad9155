"""The run directory of a campaign: locating, validating and creating it (no running here).

Layout::

    campaign.yaml            the campaign file as given
    campaign.json            the resolved configuration (every default filled in)
    points_selector          the --points i/K subset of the run (only when given)
    lock                     held by the running job (see rgdist.io.lock)
    points/<id>/ckpt-*.h5    checkpoints of each point, current.json points at the newest
    status/<id>.json         stage and progress of each point (read by `rgdist status`)
    logs/rank-XXXX.log       per-rank log
    results.h5               the results (``output.results``; written collectively at the end)

Used by the runner (rgdist.campaign.runner), `rgdist status`, `rgdist aggregate` and `rgdist plot`;
it imports none of them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from rgdist.errors import ConfigError

RESOLVED = "campaign.json"
SELECTION = "points_selector"  #: the --points subset of a run, kept so that resume keeps it
SUBDIRS = ("points", "status", "logs")


def launcher_file(name: str) -> bool:
    """Files a batch system puts in a run directory before the job starts."""
    return name == "job.sbatch" or (name.startswith("slurm-") and name.endswith(".out"))


def is_run_dir(run_dir) -> bool:
    """Whether ``run_dir`` holds a resolved campaign (``campaign.json``)."""
    return (Path(run_dir) / RESOLVED).exists()


def load_run_dir(run_dir):
    """The :class:`~rgdist.campaign.spec.Campaign` of a run directory (from ``campaign.json``);
    ConfigError if ``run_dir`` is not a directory, not a run directory or unreadable."""
    from rgdist.campaign.spec import Campaign

    run_dir = Path(run_dir)
    resolved = run_dir / RESOLVED
    if not run_dir.is_dir():
        raise ConfigError("run_dir", f"{run_dir} is not a directory")
    if not resolved.is_file():
        raise ConfigError("run_dir", f"{run_dir} is not an rgdist run directory (no {RESOLVED})")
    try:
        data = json.loads(resolved.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("run_dir", f"{resolved} is unreadable: {exc}") from None
    try:
        return Campaign.from_dict(data)
    except ConfigError:
        upgraded = upgrade_resolved(data)
        if upgraded is data:
            raise
        return Campaign.from_dict(upgraded)


#: campaign.json of runs written before the correction section was renamed (results layout 1):
#: the section ``exact`` is now ``correct``, its likelihood "exact" is now "trace"
_LAYOUT1_SECTION = ("exact", "correct")
_LAYOUT1_LIKELIHOOD = {"exact": "trace"}


def upgrade_resolved(data: dict) -> dict:
    """The resolved configuration of an older run directory in today's spelling (a new dict),
    or ``data`` itself when nothing is to be renamed.  Point ids do not change (they hash the
    old spelling)."""
    old, new = _LAYOUT1_SECTION
    if not isinstance(data, dict) or old not in data or new in data:
        return data
    out = {k: v for k, v in data.items() if k != old}
    section = dict(data[old]) if isinstance(data[old], dict) else data[old]
    if isinstance(section, dict) and section.get("likelihood") in _LAYOUT1_LIKELIHOOD:
        section["likelihood"] = _LAYOUT1_LIKELIHOOD[section["likelihood"]]
    out[new] = section
    return out


def results_file(run_dir, campaign=None) -> Path:
    """The path of the results file of ``run_dir`` (it need not exist yet)."""
    campaign = load_run_dir(run_dir) if campaign is None else campaign
    return Path(run_dir) / campaign.output.results


def completed_results(run_dir) -> Path:
    """The results file of ``run_dir``; ConfigError if the directory is missing, is not a run
    directory, or has no results file (yet)."""
    rd = Path(run_dir)
    if not rd.exists():
        raise ConfigError("run_dir", f"{rd} does not exist")
    campaign = load_run_dir(rd)  # not a directory / not a run directory -> ConfigError
    results = results_file(rd, campaign)
    if not results.is_file():
        raise ConfigError("run_dir", f"{rd} has no {campaign.output.results} yet (the campaign "
                          f"has not completed; see `rgdist status {rd}`)")
    return results


def read_selection(run_dir) -> str | None:
    """The ``--points`` selector a run was started with (None: all points)."""
    sel = Path(run_dir) / SELECTION
    return (sel.read_text().strip() or None) if sel.exists() else None


def check_new_run_dir(run_dir) -> None:
    """ConfigError if ``run_dir`` exists, is not a run directory and holds more than the
    files a batch system puts there."""
    rd = Path(run_dir)
    if rd.exists() and any(not launcher_file(f.name) for f in rd.iterdir()):
        raise ConfigError("run_dir", f"{rd} exists, is not empty and is not an rgdist run directory")


def prepare_run_dir(campaign, campaign_file: str | None, run_dir: Path, comm, points_selector=None) -> None:
    """Create the run directory (rank 0) or check that it holds this same campaign; collective."""
    err = None
    if comm.is_root:
        try:
            resolved = run_dir / RESOLVED
            if resolved.exists():
                old = json.loads(resolved.read_text())
                if old != campaign.to_dict():
                    raise ConfigError("run_dir", f"{run_dir} holds a different campaign; "
                                      "use another --run-dir or `rgdist resume` it")
            else:
                for sub in SUBDIRS:
                    (run_dir / sub).mkdir(parents=True, exist_ok=True)
                from rgdist.io.atomic import atomic_write_json

                if campaign_file is not None:
                    shutil.copyfile(campaign_file, run_dir / "campaign.yaml")
                if points_selector:
                    (run_dir / SELECTION).write_text(points_selector + "\n")
                atomic_write_json(resolved, campaign.to_dict())
        except ConfigError as exc:
            err = [exc.path, str(exc)]
    err = comm.bcast(err)
    if err is not None:
        raise ConfigError("", err[1])
