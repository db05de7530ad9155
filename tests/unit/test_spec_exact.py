"""The optional ``exact:`` campaign section (rgdist.campaign.spec.ExactSpec)."""
import json

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
    assert c.exact == S.ExactSpec() and c.exact.to_dict() == DEFAULTS and not c.exact.enabled
    assert "exact" not in c.to_dict() and "exact" not in c.context()
    assert "exact" in S.TOP_KEYS and S._SECTIONS["exact"] is S.ExactSpec


def test_off_section_keeps_point_ids_and_resolved_config():
    ref = parse_campaign(setkey(base(), "grid.m2", [0.5, 1.0]))
    for section in ({}, None, {"method": "off"}, {"method": "off", "n_steps": 7, "likelihood": "exact"}):
        c = parse_campaign({**setkey(base(), "grid.m2", [0.5, 1.0]), "exact": section})
        assert [p.point_id for p in c.points()] == [p.point_id for p in ref.points()]
        assert c.to_dict() == ref.to_dict()


def test_enabled_section_changes_ids_and_round_trips():
    ref = _ids(base())
    for value in ("reweight", "mh", "both"):
        m = setkey(base(), "exact.method", value)
        assert not set(_ids(m)) & set(ref), value
        c = parse_campaign(m)
        d = c.to_dict()
        assert d["exact"] == {**DEFAULTS, "method": value} and c.context()["exact"] == d["exact"]
        back = Campaign.from_dict(json.loads(json.dumps(d)))
        assert back == c and back.points() == c.points()
    on = setkey(base(), "exact.method", "both")
    assert _ids(setkey(on, "exact.n_steps", 21)) != _ids(on)
    assert "exact      method=both" in parse_campaign(on).summary()
    assert "exact      method=off" in parse_campaign(base()).summary()


def test_yaml_section():
    c = parse_yaml("schema_version: 1\nlattice: {N: [8]}\ngrid: {m2: [0.5], lam: [0.0]}\n"
                   "exact: {method: mh, likelihood: hutchinson, n_probes: 2, mh_chains: 4, n_proposals: 12}\n")
    assert (c.exact.method, c.exact.likelihood, c.exact.n_probes, c.exact.mh_steps) == ("mh", "hutchinson", 2, 2)


def test_unknown_keys():
    err = bad(setkey(base(), "exact.n_chains", 4), "exact.n_chains", match="allowed: method")
    assert "mh_chains" in str(err)
    bad(setkey(base(), "exact.methd", "mh"), "exact.methd", match="did you mean method")
    bad({**base(), "exact": [1]}, "exact", match="must be a mapping")


@pytest.mark.parametrize("key,value", [("method", "metropolis"), ("method", True), ("method", None),
                                       ("likelihood", "hutch"), ("likelihood", 1)])
def test_bad_names(key, value):
    err = bad(setkey(base(), f"exact.{key}", value), f"exact.{key}", match="must be one of")
    allowed = S.EXACT_METHODS if key == "method" else S.LIKELIHOODS
    assert all(a in str(err) for a in allowed)


@pytest.mark.parametrize("key,value", [("n_steps", 0), ("n_proposals", 1), ("batch_size", 0),
                                       ("mh_chains", 0), ("hmc_trajectories", -1), ("n_probes", 0),
                                       ("n_steps", 2.0), ("n_proposals", True), ("mh_chains", "4")])
def test_bad_ranges_and_types(key, value):
    bad(setkey(base(), f"exact.{key}", value), f"exact.{key}")


def test_mh_needs_two_steps():
    m = setkey(setkey(base(), "exact.method", "both"), "exact.mh_chains", 8)
    bad(setkey(m, "exact.n_proposals", 23), "exact.n_proposals", match=">= 3 * exact.mh_chains = 24")
    assert parse_campaign(setkey(m, "exact.n_proposals", 24)).exact.mh_steps == 2
    # reweighting alone has no chains
    parse_campaign(setkey(setkey(m, "exact.method", "reweight"), "exact.n_proposals", 2))


@pytest.mark.parametrize("likelihood", ["discrete", "exact"])
def test_jacobian_likelihoods_need_small_volume(likelihood):
    m = setkey(setkey(base(), "exact.method", "reweight"), "exact.likelihood", likelihood)
    assert parse_campaign(setkey(m, "lattice.N", [16])).exact.likelihood == likelihood  # V = 256
    err = bad(setkey(m, "lattice.N", [8, 20]), "exact.likelihood", match="use likelihood: hutchinson")
    assert "lattice.N[1] is 20x20" in str(err) and "V = 400" in str(err)
    bad(setkey(m, "lattice.N", [[16, 17]]), "exact.likelihood", match="V = 272")
    # Hutchinson has no volume limit, and a disabled section is not checked
    parse_campaign(setkey(setkey(m, "exact.likelihood", "hutchinson"), "lattice.N", [20]))
    parse_campaign(setkey(setkey(m, "exact.method", "off"), "lattice.N", [20]))


def test_volume_limit_matches_the_library():
    from rgdist.correct import MAX_EXACT_VOLUME, MAX_STRUCTURED_VOLUME, METHODS

    assert S.MAX_EXACT_VOLUME == MAX_EXACT_VOLUME and S.LIKELIHOODS == METHODS
    assert S.MAX_STRUCTURED_VOLUME == MAX_STRUCTURED_VOLUME


def test_closed_form_jacobian_model_allows_larger_volumes():
    m = setkey(setkey(base(), "exact.method", "reweight"), "model", {"name": "effective",
                                                                    "residual": False})
    assert parse_campaign(setkey(m, "lattice.N", [32])).exact.likelihood == "discrete"  # V = 1024
    err = bad(setkey(m, "lattice.N", [33]), "exact.likelihood", match="V <= 1024")
    assert "V = 1089" in str(err) and "determinant" in str(err)
    # the continuous exact divergence is O(V) for such a model: any volume
    parse_campaign(setkey(setkey(m, "exact.likelihood", "exact"), "lattice.N", [64]))
    # with the residual net the generic limits apply, and the error names the way out
    err = bad(setkey(setkey(m, "model.residual", True), "lattice.N", [32]), "exact.likelihood",
              match="V <= 256")
    assert "residual: false" in str(err)


def test_integrator_and_defensive_keys():
    on = setkey(base(), "exact.method", "both")
    ref = parse_campaign(on)
    assert (ref.exact.integrator, ref.exact.defensive) == ("heun", 0.0)
    # at their defaults the keys are left out of the resolved config: point ids stay as before
    assert "integrator" not in ref.to_dict()["exact"] and "defensive" not in ref.to_dict()["exact"]
    same = parse_campaign(setkey(setkey(on, "exact.integrator", "heun"), "exact.defensive", 0.0))
    assert _ids(same.to_dict()) == _ids(on)
    m = setkey(setkey(on, "exact.integrator", "implicit"), "exact.defensive", 0.25)
    c = parse_campaign(m)
    assert (c.exact.integrator, c.exact.defensive) == ("implicit", 0.25)
    assert c.to_dict()["exact"]["integrator"] == "implicit"
    assert Campaign.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert not set(_ids(m)) & set(_ids(on))
    err = bad(setkey(on, "exact.integrator", "rk5"), "exact.integrator", match="must be one of")
    assert all(name in str(err) for name in S.FLOW_INTEGRATORS)
    # rk4 integrates the continuous density; split needs the trace model and likelihood exact
    bad(setkey(on, "exact.integrator", "rk4"), "exact.integrator", match="continuous-time")
    bad(setkey(setkey(on, "exact.integrator", "split"), "exact.likelihood", "exact"),
        "exact.integrator", match="model.name: trace")
    bad(setkey(setkey(setkey(on, "exact.integrator", "split"), "exact.likelihood", "hutchinson"),
               "model", {"name": "trace"}), "exact.integrator", match="exact or discrete")
    for value in (1.0, -0.1, "half", True):
        bad(setkey(on, "exact.defensive", value), "exact.defensive")
    bad(setkey(setkey(on, "exact.integrator", "implicit"), "exact.likelihood", "hutchinson"),
        "exact.integrator", match="needs exact.likelihood: discrete")
    bad(setkey(on, "exact.defensive", 0.5), "exact.defensive", match="integrator: implicit")
    # the continuous densities integrate forward: no inverse needed
    parse_campaign(setkey(setkey(on, "exact.defensive", 0.5), "exact.likelihood", "hutchinson"))


def test_integrators_match_the_library():
    from rgdist.correct import INTEGRATORS

    assert S.FLOW_INTEGRATORS == INTEGRATORS
