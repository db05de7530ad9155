"""Scheme / sampler settings that would mislead are bad input: one `error:` line naming the
key to change, exit code 2 (rgdist.campaign.diagnostics).

* Known without data (dynamic range of the prior; leftover and sampler bias of a free
  field, lam = 0, whose spectrum is the free propagator): `validate` and `run` refuse and
  nothing is written.
* Known only from the HMC data's measured spectrum (lam > 0): `run` stops before training;
  the run directory keeps its HMC checkpoint and the point's status holds the error, no
  results file is written, and `resume` stops again with the same message.
"""
from __future__ import annotations

import json

import pytest

from campaign_util import TINY, rgdist

pytestmark = pytest.mark.e2e


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _campaign(tmp_path, scheme: str, grid="{m2: [0.3], lam: [0.0]}", sample="{}", name="c.yaml"):
    text = TINY.format(train_steps=4, sample_steps=8, every=3)
    text = text.replace("scheme: {name: carosso, T: 10.0, mu2: 0.3}", f"scheme: {scheme}")
    text = text.replace("grid: {m2: [-0.7, -0.4], lam: [0.5, 1.0]}", f"grid: {grid}")
    text = text.replace("sample: {n_samples: 32, batch_size: 8, n_steps: 8}", f"sample: {sample}")
    text = text.replace("measure: {n_bins: 8, record_times: [0.5, 5.0]}", "measure: {n_bins: 8}")
    (tmp_path / name).write_text(text)
    return name


def _one_error_line(out):
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("scheme,sample,keys", [
    ("{name: polchinski, T: 3.0}", "{n_samples: 32, batch_size: 8}",
     ("scheme.T", "dynamic range", "lower scheme.T")),
    ("{name: polchinski, mu2: 0.0}", "{n_samples: 32, batch_size: 8}",
     ("scheme.mu2", "A_T^2 G / Sigma_T", "scheme.max_leftover")),
    ("{name: carosso}", "{n_samples: 1024, batch_size: 256, solver: heun_ode}",
     ("sample.solver", "sample.grid: log", "sample.max_bias")),
])
@pytest.mark.parametrize("verb", ["validate", "run"])
def test_refused_before_anything_is_written(tmp_path, scheme, sample, keys, verb):
    f = _campaign(tmp_path, scheme, sample=sample)
    before = _listing(tmp_path)
    out = rgdist([verb, f], cwd=tmp_path, timeout=300)
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    line = _one_error_line(out)
    for key in keys:
        assert key in line, (key, line)
    assert _listing(tmp_path) == before


def test_validate_prints_labelled_estimates(tmp_path):
    f = _campaign(tmp_path, "{name: carosso}", grid="{m2: [-0.7], lam: [0.5]}",
                  sample="{n_samples: 32, batch_size: 8}")
    out = rgdist(["validate", f], cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "free-field estimate (G = 1/(phat^2 + |m2|), lam ignored)" in out.stdout
    assert "scheme.max_leftover = 0.1" in out.stdout and "G(0) = V <M^2> <=" in out.stdout


def test_leftover_of_the_measured_spectrum_stops_run_and_resume(tmp_path):
    # IR mass 0.01: the zero mode keeps A_T^2 = exp(-0.2) of its (broken-phase) signal at T
    f = _campaign(tmp_path, "{name: carosso, T: 10.0, mu2: 0.01}", grid="{m2: [-0.7], lam: [0.5]}",
                  sample="{n_samples: 32, batch_size: 8}")
    out = rgdist(["validate", f], cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "over the limit" in out.stdout, out.stdout[-3000:]
    out = rgdist(["run", f], cwd=tmp_path, timeout=600)
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    line = _one_error_line(out)
    assert "scheme.T" in line and "scheme.mu2" in line and "measured on its HMC data" in line
    run = tmp_path / "run"
    assert not (run / "results.h5").exists()
    (status,) = (run / "status").glob("*.json")
    st = json.loads(status.read_text())
    assert st["stage"] == "train" and "A_T^2 G / Sigma_T" in st["error"]
    ckpts = sorted(p.name for p in (run / "points").rglob("ckpt-*.h5"))
    assert ckpts
    again = rgdist(["resume", "run"], cwd=tmp_path, timeout=600)
    assert again.returncode == 2 and _one_error_line(again) == line
    assert sorted(p.name for p in (run / "points").rglob("ckpt-*.h5")) == ckpts
    assert not (run / "results.h5").exists()
