"""Bad input on the campaign verbs: one `error:` line, exit code 2, nothing written."""
from __future__ import annotations

import pytest

from campaign_util import rgdist, write_tiny

pytestmark = pytest.mark.e2e


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("args", [
    ["run", "missing.yaml"],
    ["resume", "nowhere"],
    ["resume", "plain_dir"],
    ["status", "plain_dir"],
    ["status", "nowhere"],
    ["run", "tiny.yaml", "--points", "3/2"],
    ["run", "tiny.yaml", "--points", "x"],
    ["run", "tiny.yaml", "--run-dir", "plain_dir"],
    ["bench", "nonexistent"],
])
def test_bad_input_exits_2_with_one_error_line(tmp_path, args):
    write_tiny(tmp_path)
    (tmp_path / "plain_dir").mkdir()
    (tmp_path / "plain_dir" / "notes.txt").write_text("not a run directory\n")
    before = _listing(tmp_path)
    out = rgdist(args, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, (args, out.returncode, out.stderr[-2000:])
    if args and args[0] in ("run", "resume", "status"):
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("args", [["run", "--no-such-flag"], ["status"], []])
def test_usage_errors_exit_2(tmp_path, args):
    out = rgdist(args, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, (args, out.returncode, out.stderr[-2000:])
    assert out.stderr.startswith("usage:") or out.stdout.startswith("usage:")
    assert _listing(tmp_path) == []
