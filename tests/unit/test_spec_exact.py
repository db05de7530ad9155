"""The optional ``correct:`` campaign section (rgdist.campaign.spec.CorrectSpec: the
Metropolis/reweighting correction; layout 1 called it ``exact:``)."""
import json
from pathlib import Path

import pytest

from rgdist.campaign import spec as S
from rgdist.campaign.spec import Campaign, parse_campaign, parse_yaml
from rgdist.errors import ConfigError

from test_spec import bad, base, setkey

DEFAULTS = dict(method="off", likelihood="discrete", n_steps=20, n_proposals=1024, batch_size=256,
                mh_chains=16, hmc_trajectories=0, n_probes=4)


def _ids(m):
    return [p.point_id for p in parse_campaign(m).points()]


def test_defaults_and_absent_section():
    c = parse_campaign(base())
    assert c.correct == S.CorrectSpec() and c.correct.to_dict() == DEFAULTS and not c.correct.enabled
    assert "correct" not in c.to_dict() and "exact" not in c.context()
    assert "correct" in S.TOP_KEYS and S._SECTIONS["correct"] is S.CorrectSpec
    assert "exact" not in S.TOP_KEYS and not hasattr(c, "exact")  # the former name is gone


def test_off_section_keeps_point_ids_and_resolved_config():
    ref = parse_campaign(setkey(base(), "grid.m2", [0.5, 1.0]))
    for section in ({}, None, {"method": "off"}, {"method": "off", "n_steps": 7, "likelihood": "trace"}):
        c = parse_campaign({**setkey(base(), "grid.m2", [0.5, 1.0]), "correct": section})
        assert [p.point_id for p in c.points()] == [p.point_id for p in ref.points()]
        assert c.to_dict() == ref.to_dict()


def test_enabled_section_changes_ids_and_round_trips():
    ref = _ids(base())
    for value in ("reweight", "mh", "both"):
        m = setkey(base(), "correct.method", value)
        assert not set(_ids(m)) & set(ref), value
        c = parse_campaign(m)
        d = c.to_dict()
        # the ids hash the section under its layout-1 key "exact"; to_dict says "correct"
        assert d["correct"] == {**DEFAULTS, "method": value} and c.context()["exact"] == d["correct"]
        assert "exact" not in d and "correct" not in c.context()
        back = Campaign.from_dict(json.loads(json.dumps(d)))
        assert back == c and back.points() == c.points()
    on = setkey(base(), "correct.method", "both")
    assert _ids(setkey(on, "correct.n_steps", 21)) != _ids(on)
    assert "correct    method=both" in parse_campaign(on).summary()
    assert "correct    method=off" in parse_campaign(base()).summary()


def test_yaml_section():
    c = parse_yaml("schema_version: 1\nlattice: {N: [8]}\ngrid: {m2: [0.5], lam: [0.0]}\n"
                   "correct: {method: mh, likelihood: hutchinson, n_probes: 2, mh_chains: 4, n_proposals: 12}\n")
    assert (c.correct.method, c.correct.likelihood, c.correct.n_probes, c.correct.mh_steps) == ("mh", "hutchinson", 2, 2)


def test_unknown_keys():
    err = bad(setkey(base(), "correct.n_chains", 4), "correct.n_chains", match="allowed: method")
    assert "mh_chains" in str(err)
    bad(setkey(base(), "correct.methd", "mh"), "correct.methd", match="did you mean method")
    bad({**base(), "correct": [1]}, "correct", match="must be a mapping")


@pytest.mark.parametrize("key,value", [("method", "metropolis"), ("method", True), ("method", None),
                                       ("likelihood", "hutch"), ("likelihood", 1)])
def test_bad_names(key, value):
    err = bad(setkey(base(), f"correct.{key}", value), f"correct.{key}", match="must be one of")
    allowed = S.CORRECT_METHODS if key == "method" else S.LIKELIHOODS
    assert all(a in str(err) for a in allowed)


@pytest.mark.parametrize("key,value", [("n_steps", 0), ("n_proposals", 1), ("batch_size", 0),
                                       ("mh_chains", 0), ("hmc_trajectories", -1), ("n_probes", 0),
                                       ("n_steps", 2.0), ("n_proposals", True), ("mh_chains", "4")])
def test_bad_ranges_and_types(key, value):
    bad(setkey(base(), f"correct.{key}", value), f"correct.{key}")


def test_mh_needs_two_steps():
    m = setkey(setkey(base(), "correct.method", "both"), "correct.mh_chains", 8)
    bad(setkey(m, "correct.n_proposals", 23), "correct.n_proposals", match=">= 3 * correct.mh_chains = 24")
    assert parse_campaign(setkey(m, "correct.n_proposals", 24)).correct.mh_steps == 2
    # reweighting alone has no chains
    parse_campaign(setkey(setkey(m, "correct.method", "reweight"), "correct.n_proposals", 2))


@pytest.mark.parametrize("likelihood", ["discrete", "trace"])
def test_jacobian_likelihoods_need_small_volume(likelihood):
    m = setkey(setkey(base(), "correct.method", "reweight"), "correct.likelihood", likelihood)
    assert parse_campaign(setkey(m, "lattice.N", [16])).correct.likelihood == likelihood  # V = 256
    err = bad(setkey(m, "lattice.N", [8, 20]), "correct.likelihood", match="use likelihood: hutchinson")
    assert "lattice.N[1] is 20x20" in str(err) and "V = 400" in str(err)
    bad(setkey(m, "lattice.N", [[16, 17]]), "correct.likelihood", match="V = 272")
    # Hutchinson has no volume limit, and a disabled section is not checked
    parse_campaign(setkey(setkey(m, "correct.likelihood", "hutchinson"), "lattice.N", [20]))
    parse_campaign(setkey(setkey(m, "correct.method", "off"), "lattice.N", [20]))


def test_volume_limit_matches_the_library():
    from rgdist.density import DENSITY_METHODS as METHODS, MAX_EXACT_VOLUME, MAX_STRUCTURED_VOLUME

    assert S.MAX_EXACT_VOLUME == MAX_EXACT_VOLUME and S.LIKELIHOODS == METHODS
    assert S.MAX_STRUCTURED_VOLUME == MAX_STRUCTURED_VOLUME


def test_closed_form_jacobian_model_allows_larger_volumes():
    m = setkey(setkey(base(), "correct.method", "reweight"), "model", {"name": "effective",
                                                                    "residual": False})
    assert parse_campaign(setkey(m, "lattice.N", [32])).correct.likelihood == "discrete"  # V = 1024
    err = bad(setkey(m, "lattice.N", [33]), "correct.likelihood", match="V <= 1024")
    assert "V = 1089" in str(err) and "determinant" in str(err)
    # the continuous exact divergence is O(V) for such a model: any volume
    parse_campaign(setkey(setkey(m, "correct.likelihood", "trace"), "lattice.N", [64]))
    # with the residual net the generic limits apply, and the error names the way out
    err = bad(setkey(setkey(m, "model.residual", True), "lattice.N", [32]), "correct.likelihood",
              match="V <= 256")
    assert "residual: false" in str(err)


def test_integrator_and_defensive_keys():
    on = setkey(base(), "correct.method", "both")
    ref = parse_campaign(on)
    assert (ref.correct.integrator, ref.correct.defensive) == ("heun", 0.0)
    # at their defaults the keys are left out of the resolved config: point ids stay as before
    assert "integrator" not in ref.to_dict()["correct"] and "defensive" not in ref.to_dict()["correct"]
    same = parse_campaign(setkey(setkey(on, "correct.integrator", "heun"), "correct.defensive", 0.0))
    assert _ids(same.to_dict()) == _ids(on)
    m = setkey(setkey(on, "correct.integrator", "implicit"), "correct.defensive", 0.25)
    c = parse_campaign(m)
    assert (c.correct.integrator, c.correct.defensive) == ("implicit", 0.25)
    assert c.to_dict()["correct"]["integrator"] == "implicit"
    assert Campaign.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert not set(_ids(m)) & set(_ids(on))
    err = bad(setkey(on, "correct.integrator", "rk5"), "correct.integrator", match="must be one of")
    assert all(name in str(err) for name in S.FLOW_INTEGRATORS)
    # rk4 integrates the continuous density; split needs the trace model and likelihood trace
    # or discrete (the pairing rules are the library's: rgdist.catalog.check_density)
    bad(setkey(on, "correct.integrator", "rk4"), "correct.integrator", match="continuous-time")
    bad(setkey(setkey(on, "correct.integrator", "split"), "correct.likelihood", "trace"),
        "correct.integrator", match="model.name: trace")
    bad(setkey(setkey(setkey(on, "correct.integrator", "split"), "correct.likelihood", "hutchinson"),
               "model", {"name": "trace"}), "correct.integrator", match="not 'hutchinson'")
    for value in (1.0, -0.1, "half", True):
        bad(setkey(on, "correct.defensive", value), "correct.defensive")
    bad(setkey(setkey(on, "correct.integrator", "implicit"), "correct.likelihood", "hutchinson"),
        "correct.integrator", match="needs density method 'discrete'")
    bad(setkey(on, "correct.defensive", 0.5), "correct.defensive", match="integrator: implicit")
    # the continuous densities integrate forward: no inverse needed
    parse_campaign(setkey(setkey(on, "correct.defensive", 0.5), "correct.likelihood", "hutchinson"))


def test_integrators_match_the_library():
    from rgdist.density import INTEGRATORS

    assert S.FLOW_INTEGRATORS == INTEGRATORS


# --- the layout-1 spellings -----------------------------------------------------------------------
def test_former_section_name_is_bad_input():
    err = bad({**base(), "exact": {"method": "both"}}, "exact", match="now called correct")
    assert "rename exact: to correct:" in str(err)
    err = yaml_err("schema_version: 1\nlattice: {N: [8]}\ngrid: {m2: [0.5], lam: [0.0]}\n"
                   "exact: {method: off}\n")
    assert err.path == "exact"


def yaml_err(text):
    with pytest.raises(ConfigError) as info:
        parse_yaml(text)
    return info.value


def test_former_likelihood_name_is_bad_input():
    err = bad(setkey(base(), "correct.likelihood", "exact"), "correct.likelihood",
              match="'exact' is now spelled 'trace'")
    assert all(name in str(err) for name in S.LIKELIHOODS)
    assert S.LIKELIHOODS == ("discrete", "trace", "hutchinson")
    with pytest.raises(ConfigError):
        S.CorrectSpec(likelihood="exact")


def test_point_ids_hash_the_layout1_spelling():
    """The ids of correction campaigns are those of layout 1: the run-directory fixture written
    by the layout-1 code (tests/data/layout1_run) has exactly these ids, and a trace campaign
    hashes likelihood "exact" (its id computed by the layout-1 schema)."""
    layout1 = Path(__file__).resolve().parents[1] / "data" / "layout1_run"
    text = (layout1 / "campaign.yaml").read_text()
    assert "\nexact: {method: both" in text
    c = parse_yaml(text.replace("\nexact: {", "\ncorrect: {"))
    assert sorted(_ids(c.to_dict())) == sorted(f.stem for f in (layout1 / "status").glob("*.json"))
    m = setkey(setkey(base(), "correct.method", "reweight"), "correct.likelihood", "trace")
    t = parse_campaign(m)
    assert t.context()["exact"]["likelihood"] == "exact" and t.to_dict()["correct"]["likelihood"] == "trace"
    assert _ids(m) == ["92ef3cb581c8af99"]
    assert Campaign.from_dict(json.loads(json.dumps(t.to_dict()))) == t
