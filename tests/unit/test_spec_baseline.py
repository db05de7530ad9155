"""The optional ``baseline:`` campaign section (rgdist.campaign.run_sections.BaselineSpec: the
flow baseline of Gerdes et al.): off when absent, never in the point ids, strict validation
(every bad key or value is a ConfigError naming its key path; `rgdist validate` exits 2)."""
import os

import pytest
import yaml

from rgdist.campaign import spec as S
from rgdist.campaign.spec import Campaign, parse_campaign
from rgdist.catalog import CAMPAIGN_BASELINE_DEFAULTS
from rgdist.cli import main

from test_spec import bad, base, setkey


def _ids(m):
    return [p.point_id for p in parse_campaign(m).points()]


def _with(section):
    return {**setkey(base(), "grid.m2", [0.5, 1.0]), "baseline": section}


def test_absent_null_or_disabled_section_changes_nothing():
    # a disabled section is validated all the same (bad values are refused) but changes nothing
    ref = parse_campaign(setkey(base(), "grid.m2", [0.5, 1.0]))
    assert not ref.baseline.enabled and "baseline" not in ref.to_dict()
    assert "baseline" in S.TOP_KEYS and S._SECTIONS["baseline"] is S.BaselineSpec
    for section in (None, {"enabled": False}, {"enabled": False, "steps": 30}):
        c = parse_campaign(_with(section))
        assert not c.baseline.enabled
        assert c.to_dict() == ref.to_dict() and _ids(_with(section)) == _ids(ref.to_dict())
        assert "baseline" not in c.summary()


def test_given_section_is_on_with_the_catalog_defaults_and_round_trips():
    c = parse_campaign(_with({}))
    assert c.baseline.enabled
    got = c.baseline.to_dict()
    # keys added later (sample_dtype) stay out of to_dict at their defaults: the resolved
    # configuration of existing run directories is unchanged, so they resume
    later = S.BaselineSpec.LATER
    assert later == ("sample_dtype",)
    assert got == {"enabled": True, **{k: v for k, v in CAMPAIGN_BASELINE_DEFAULTS.items()
                                       if k not in later}}
    assert c.baseline.sample_dtype == "auto" and c.baseline.sampling_dtype == "float64"
    # "auto": every ceil(n_steps / 10)-th RK4 step and tau = 1, each exactly i / n_steps
    assert c.baseline.taus == tuple(i / 20 for i in range(0, 21, 2))
    assert parse_campaign(_with({"n_steps": 25})).baseline.taus == tuple(
        [i / 25 for i in range(0, 25, 3)] + [1.0])
    # the baseline never enters the point ids (its streams are its own), but it is part of the
    # resolved configuration (a run directory of other baseline settings is refused)
    assert _ids(_with({"steps": 5, "warmup": 1})) == _ids(setkey(base(), "grid.m2", [0.5, 1.0]))
    d = parse_campaign(_with({"steps": 5, "warmup": 1, "tau_grid": [0, 0.5, 1]})).to_dict()
    assert d["baseline"]["steps"] == 5 and d["baseline"]["tau_grid"] == [0.0, 0.5, 1.0]
    back = Campaign.from_dict(d)
    assert back.to_dict() == d and back.baseline.taus == (0.0, 0.5, 1.0)
    assert "baseline   enabled=True steps=5" in back.summary()


def test_sample_dtype_given_enters_the_configuration_and_round_trips():
    c = parse_campaign(_with({"dtype": "float32", "grad_checkpoint": False,
                              "sample_dtype": "float64"}))
    assert c.baseline.sampling_dtype == "float64" and c.baseline.dtype == "float32"
    d = c.to_dict()
    assert d["baseline"]["sample_dtype"] == "float64"
    assert Campaign.from_dict(d).to_dict() == d
    # "auto" follows dtype; the same dtype spelled out is a different configuration
    assert parse_campaign(_with({"dtype": "float32"})).baseline.sampling_dtype == "float32"
    same = parse_campaign(_with({"sample_dtype": "float64"}))
    assert same.to_dict()["baseline"]["sample_dtype"] == "float64"


BAD = [  # (section, key path, words the message must hold)
    ([1], "baseline", "must be a mapping"),
    ({"stepz": 3}, "baseline.stepz", "allowed: enabled, steps"),
    ({"enabled": "yes"}, "baseline.enabled", "true or false"),
    ({"steps": 0}, "baseline.steps", ">= 1"),
    ({"steps": 10.0}, "baseline.steps", "integer"),
    ({"batch_size": 0}, "baseline.batch_size", ">= 1"),
    ({"lr": 0}, "baseline.lr", "> 0"),
    ({"lr_schedule": "linear"}, "baseline.lr_schedule", "cosine, constant"),
    ({"lr_min_ratio": 1.5}, "baseline.lr_min_ratio", "in [0, 1]"),
    ({"warmup": -1}, "baseline.warmup", ">= 0"),
    ({"warmup": 200}, "baseline.warmup", "< baseline.steps = 200"),
    ({"grad_clip": -1.0}, "baseline.grad_clip", ">= 0"),
    ({"grad_checkpoint": 1}, "baseline.grad_checkpoint", "true or false"),
    ({"n_steps": 0}, "baseline.n_steps", "in [1, 10000]"),
    ({"m0_sq": 0.0}, "baseline.m0_sq", "> 0"),
    ({"channels": -1}, "baseline.channels", ">= 0"),
    ({"global_channels": 1.5}, "baseline.global_channels", "integer"),
    ({"radius": -1}, "baseline.radius", ">= 0"),
    ({"filter_rank": 0}, "baseline.filter_rank", ">= 1"),
    ({"dtype": "float16"}, "baseline.dtype", "float32, float64"),
    ({"sample_dtype": "float16"}, "baseline.sample_dtype", "auto, float32, float64"),
    ({"sample_dtype": None}, "baseline.sample_dtype", "auto, float32, float64"),
    ({"n_samples": 1}, "baseline.n_samples", ">= 2"),
    ({"sample_batch": 0}, "baseline.sample_batch", ">= 1"),
    ({"tau_grid": "all"}, "baseline.tau_grid", '"auto" or a list'),
    ({"tau_grid": []}, "baseline.tau_grid", "at least 1"),
    ({"tau_grid": [0.0, 1.5]}, "baseline.tau_grid[1]", "in [0, 1]"),
    ({"tau_grid": [0.5, 0.2]}, "baseline.tau_grid[1]", "strictly increasing"),
    ({"tau_grid": [0.0, 0.33]}, "baseline.tau_grid[1]", "multiple of 1/baseline.n_steps = 1/20"),
    ({"n_steps": 4, "tau_grid": [0.0, 0.1]}, "baseline.tau_grid[1]", "1/4"),
]


@pytest.mark.parametrize("section,path,words", BAD, ids=[b[1] + ":" + str(i) for i, b in enumerate(BAD)])
def test_bad_values_name_their_key(section, path, words):
    bad(_with(section), path, words)


def test_validate_cli_exits_2_naming_the_key_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(_with({"steps": 10, "n_stepz": 4})))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: baseline.n_stepz: unknown key (did you mean n_steps?)"), err
    assert len(err.splitlines()) == 1 and os.listdir(tmp_path) == ["c.yaml"]
    f.write_text(yaml.safe_dump(_with({"steps": 10, "warmup": 2})))
    assert main(["validate", str(f)]) == 0
    assert "baseline   enabled=True steps=10" in capsys.readouterr().out
