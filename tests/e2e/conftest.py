"""End-to-end tests import their helpers from this folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import types  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One serial run of the tiny campaign (``campaign_util.write_tiny`` defaults), shared by
    the tests that compare against it or read it; none of them may write into it."""
    from campaign_util import digest, rgdist, write_tiny

    tmp = tmp_path_factory.mktemp("tiny_ref")
    camp = write_tiny(tmp)
    out = rgdist(["run", str(camp), "--run-dir", "ref"], cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return types.SimpleNamespace(campaign=camp, digest=digest(tmp / "ref"), run_dir=tmp / "ref",
                                 stdout=out.stdout)
