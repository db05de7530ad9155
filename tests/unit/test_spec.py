"""Campaign specification: YAML -> validated frozen dataclasses (rgdist.campaign.spec)."""
import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from rgdist.campaign import spec as S
from rgdist.campaign.spec import Campaign, load_campaign, parse_campaign, parse_yaml
from rgdist.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = sorted((ROOT / "campaigns").glob("*.yaml"))


def base():
    """The smallest valid campaign."""
    return {"schema_version": 1, "lattice": {"N": [8]}, "grid": {"m2": [0.5], "lam": [0.0]}}


def setkey(d, path, value):
    """A deep copy of d with the dotted key path set (missing sections are created)."""
    d = copy.deepcopy(d)
    node, keys = d, path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return d


def delkey(d, path):
    d = copy.deepcopy(d)
    node, keys = d, path.split(".")
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    return d


def bad(mapping, path, match=None):
    with pytest.raises(ConfigError) as info:
        parse_campaign(mapping)
    err = info.value
    assert err.path == path, str(err)
    assert "\n" not in str(err)
    if match:
        assert match in str(err), str(err)
    return err


# --- defaults and round trip -------------------------------------------------------------------
ISSUE_DEFAULTS = {
    "hmc": dict(n_chains=64, therm=200, n_traj=400, thin=10, n_steps=10, step_size=0.1,
                integrator="leapfrog", target_accept=0.9, fourier_accel=False, chains_per_block=16),
    "train": dict(steps=1000, batch_size=128, lr=2e-3, lr_schedule="cosine", warmup=50,
                  ema_decay=0.999, grad_clip=1.0, weighting="sigma", t_sampler="uniform", max_seconds=None),
    "sample": dict(n_samples=1024, batch_size=256, n_steps=100, solver="exponential", grid="uniform",
                   denoise=True),
    "measure": dict(n_bins=32, record_times=[]),
    "checkpoint": dict(every_steps=200, every_seconds=300.0, keep=3),
    "resources": dict(ranks_per_point="auto", device="auto"),
}


def test_defaults_filled_in():
    d = parse_campaign(base()).to_dict()
    for section, values in ISSUE_DEFAULTS.items():
        for key, want in values.items():
            assert d[section][key] == want, (section, key)
            assert type(d[section][key]) is type(want), (section, key)
    assert d["schema_version"] == 1 and d["seed"] == 0 and d["name"] == "campaign"
    assert d["theory"] == {"parametrization": "standard"}
    assert d["grid"] == {"combine": "product", "max_points": 10000, "m2": [0.5], "lam": [0.0]}
    assert d["lattice"] == {"N": [[8, 8]], "d": 2}
    assert d["scheme"] == {"name": "carosso", "T": 40.0, "mu2": 0.1, "t_min": 1e-3}
    assert d["model"] == {"name": "conv", "gaussian_exact": True, "dtype": "float64", "channels": 16, "blocks": 2}
    assert d["output"] == {"dir": "runs/campaign", "results": "results.h5", "save_samples": False}
    assert d["resources"]["threads"] == "auto"


def _variants():
    yield base()
    yield {**base(), "theory": {"parametrization": "hopping"},
           "grid": {"kappa": {"linspace": [0.2, 0.26, 4]}, "lam_h": [0.01, 0.02], "combine": "product"}}
    yield {**base(), "grid": {"m2": [-1, -0.5], "lam": [1, 2], "combine": "zip"},
           "lattice": {"N": [[8, 16], 12], "d": 2}}
    yield {**base(), "model": {"name": "unet", "levels": 3, "dtype": "float32"}, "lattice": {"N": [8, 16]}}
    yield {**base(), "model": {"name": "effective", "operators": ["phi4", "phi2"], "residual": False}}
    for name in S.SCHEMES:
        yield {**base(), "scheme": {"name": name}, "measure": {"record_times": [0.0, 0.5]}}
    yield {**base(), "lattice": {"N": {"range": [4, 13, 4]}, "d": 3}, "seed": 2**63 - 1,
           "output": {"dir": "/abs/dir", "results": "sub/res.h5", "save_samples": True},
           "resources": {"ranks_per_point": 3, "device": "cuda", "threads": 2},
           "train": {"max_seconds": 60, "grad_clip": 0},
           "hmc": {"fourier_accel": True, "fa_mass2": 0.5},
           "checkpoint": {"every_seconds": None}}


@pytest.mark.parametrize("mapping", list(_variants()))
def test_to_dict_from_dict_round_trip(mapping):
    c = parse_campaign(mapping)
    d = c.to_dict()
    back = Campaign.from_dict(json.loads(json.dumps(d)))
    assert back == c and back.to_dict() == d
    assert [p for p in back.points()] == c.points()
    assert json.loads(json.dumps(d)) == d  # JSON-able, no tuples or NaN
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.name)
def test_shipped_campaigns_load(path):
    c = load_campaign(path)
    assert c.points() and c.name == path.stem
    assert Campaign.from_dict(c.to_dict()) == c
    assert c.summary().count("\n") >= 10


def test_default_campaign_is_a_smoke_run():
    c = load_campaign(ROOT / "campaigns" / "default.yaml")
    assert 1 <= len(c.points()) <= 16
    assert all(p.N[0] <= 32 for p in c.points())


def test_sections_are_frozen():
    c = parse_campaign(base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hmc.n_chains = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 3


def test_section_constructors_validate_too():
    with pytest.raises(ConfigError) as info:
        S.HMCSpec(n_chains=0)
    assert info.value.path == "hmc.n_chains"
    assert S.TrainSpec(lr="1e-4").lr == 1e-4
    with pytest.raises(ConfigError):
        S.ModelSpec(name="unet", arch=(("blocks", 2),))


def test_params_for_builders():
    c = parse_campaign({**base(), "scheme": {"name": "polchinski", "T": 2.5, "t_min": 0.01}})
    assert c.scheme.params == {"T": 2.5, "Lambda0": 4.0, "m02": 1.0, "mu2": 4.0}  # rgdist.catalog
    assert c.scheme.t_min == 0.01 and c.scheme.T == 2.5
    assert c.model.params == {"channels": 16, "blocks": 2} and c.model.channels == 16
    with pytest.raises(AttributeError):
        c.model.levels
    e = parse_campaign({**base(), "model": {"name": "effective"}}).model
    # the library's defaults (rgdist.catalog.MODEL_PARAMS): all four operators, no residual net
    assert e.params == {"operators": ["phi2", "grad2", "phi4", "phi6"], "residual": False,
                        "residual_channels": 16, "residual_blocks": 2}
    assert c.train.as_kwargs()["lr"] == 2e-3 and "t_min" not in c.train.as_kwargs()
    assert c.hmc.n_configs == 64 * 40


# --- unknown keys, missing keys -----------------------------------------------------------------
@pytest.mark.parametrize("path", ["foo", "hmc.n_chainz", "lattice.n", "output.directory",
                                  "resources.gpus", "scheme.beta_min", "model.levels", "grid.kappa",
                                  "theory.kappa", "measure.bins"])
def test_unknown_keys_name_path_and_allowed(path):
    e = bad(setkey(base(), path, 1), path, match="unknown key")
    assert "allowed:" in str(e)


def test_unknown_key_hints():
    assert "did you mean n_chains" in str(bad(setkey(base(), "hmc.n_chainz", 1), "hmc.n_chainz"))
    assert "hopping" in str(bad(setkey(base(), "grid.kappa", [0.1]), "grid.kappa"))
    assert "model unet" in str(bad(setkey(base(), "model.levels", 2), "model.levels"))
    assert "scheme vp" in str(bad(setkey(base(), "scheme.beta_max", 2.0), "scheme.beta_max"))


def test_unknown_key_inside_generated_axis():
    bad(setkey(base(), "grid.m2", {"linspace": [0.1, 1, 3], "step": 1}), "grid.m2.step")


def test_non_string_keys():
    bad({**base(), 1: 2}, "[1]", match="strings")
    bad(setkey(base(), "hmc", {True: 1}), "hmc[True]", match="strings")


@pytest.mark.parametrize("path", ["schema_version", "lattice", "grid", "lattice.N", "grid.m2", "grid.lam"])
def test_required_keys(path):
    bad(delkey(base(), path), path, match="required")


def test_hopping_needs_its_axes():
    m = {**base(), "theory": {"parametrization": "hopping"}}
    bad(m, "grid.m2", match="unknown key")
    bad(setkey(m, "grid", {"kappa": [0.1]}), "grid.lam_h", match="required")


# --- types and ranges ----------------------------------------------------------------------------
TYPE_CASES = [
    ("hmc.n_chains", True), ("hmc.n_chains", 64.0), ("hmc.n_chains", "64"), ("hmc.n_chains", 0),
    ("hmc.n_chains", -4), ("hmc.therm", -1), ("hmc.thin", 0), ("hmc.step_size", 0),
    ("hmc.step_size", -0.1), ("hmc.step_size", math.nan), ("hmc.target_accept", 1.0),
    ("hmc.target_accept", 0), ("hmc.fourier_accel", 1), ("hmc.fourier_accel", "yes"),
    ("hmc.fa_mass2", 0.0), ("train.steps", 0), ("train.batch_size", [128]), ("train.lr", 0),
    ("train.lr", "fast"), ("train.lr", math.inf), ("train.warmup", -1), ("train.ema_decay", 1.0),
    ("train.grad_clip", -1.0), ("train.grad_clip", None), ("train.max_seconds", 0),
    ("sample.n_samples", -1), ("sample.batch_size", 1.5), ("sample.n_steps", 0),
    ("sample.denoise", "true"), ("measure.n_bins", 1), ("measure.record_times", 0.5),
    ("checkpoint.every_steps", 0), ("checkpoint.every_seconds", -5), ("checkpoint.keep", 0),
    ("output.save_samples", 0), ("output.dir", ""), ("output.dir", 5), ("output.dir", "a\nb"),
    ("resources.ranks_per_point", 0), ("resources.ranks_per_point", "all"),
    ("resources.threads", 0), ("resources.threads", 2.0), ("scheme.T", 0), ("scheme.T", "forty"),
    ("scheme.mu2", -0.1), ("scheme.t_min", 0), ("model.channels", 0), ("model.blocks", True),
    ("model.gaussian_exact", "yes"), ("lattice.d", 0), ("lattice.d", 2.0), ("seed", -1),
    ("seed", 2**63), ("seed", 1.0), ("name", "a b"), ("name", ""), ("name", "-x"),
    ("grid.max_points", 0), ("grid.max_points", 10**7), ("train.zero_mode_weight", 0),
    ("train.zero_mode_weight", -2.0), ("train.zero_mode_weight", "high"),
    ("train.zero_mode_weight", math.inf), ("model.time_freq", -1), ("model.time_freq", 65),
    ("model.time_freq", 2.5), ("model.time_freq", True),
]


@pytest.mark.parametrize("path,value", TYPE_CASES, ids=[f"{p}={v!r}" for p, v in TYPE_CASES])
def test_bad_values_name_their_path(path, value):
    bad(setkey(base(), path, value), path)


@pytest.mark.parametrize("section", ["lattice", "theory", "grid", "scheme", "model", "train", "sample",
                                     "measure", "hmc", "correct", "checkpoint", "output",
                                     "resources"])
def test_sections_must_be_mappings(section):
    bad(setkey(base(), section, [1, 2]), section, match="mapping")


def test_null_sections_mean_defaults():
    c = parse_campaign({**base(), "hmc": None, "train": None})
    assert c.hmc == S.HMCSpec() and c.train == S.TrainSpec()


def test_ints_accepted_for_reals_and_normalized():
    c = parse_campaign(setkey(base(), "hmc.step_size", 1))
    assert c.hmc.step_size == 1.0 and isinstance(c.hmc.step_size, float)
    c2 = parse_campaign(setkey(base(), "hmc.step_size", 1.0))
    assert c.points()[0].point_id == c2.points()[0].point_id


def test_yaml11_exponent_strings_are_numbers():
    c = parse_yaml("schema_version: 1\nlattice: {N: [8]}\ngrid: {m2: [5e-1], lam: 0}\ntrain: {lr: 2e-4}\n")
    assert c.train.lr == 2e-4 and c.points()[0].m2 == 0.5


# --- names checked against lists ------------------------------------------------------------------
NAME_FIELDS = [("scheme.name", S.SCHEMES), ("model.name", S.MODELS), ("sample.solver", S.SOLVERS),
               ("sample.grid", S.TIME_GRIDS), ("hmc.integrator", S.INTEGRATORS),
               ("train.weighting", S.WEIGHTINGS), ("train.t_sampler", S.T_SAMPLERS),
               ("train.lr_schedule", S.LR_SCHEDULES), ("model.dtype", S.DTYPES),
               ("resources.device", S.DEVICES), ("theory.parametrization", ("standard",)),
               ("grid.combine", ("product", "zip"))]


@pytest.mark.parametrize("path,names", NAME_FIELDS, ids=[p for p, _ in NAME_FIELDS])
def test_names_checked_against_lists(path, names):
    for name in names:
        parse_campaign(setkey(base(), path, name))
    e = bad(setkey(base(), path, "bogus"), path, match="must be one of")
    assert all(n in str(e) for n in names)
    bad(setkey(base(), path, 3), path)


def test_name_lists_match_the_issue():
    assert S.SCHEMES == ("carosso", "polchinski", "renormalized_polchinski", "vp", "ve")
    assert S.MODELS == ("conv", "unet", "trace", "effective")
    assert S.SOLVERS == ("euler_maruyama", "exponential", "pc", "heun_ode")
    assert S.TIME_GRIDS == ("uniform", "log", "snr")
    assert S.INTEGRATORS == ("leapfrog", "omelyan")
    assert S.WEIGHTINGS == ("sigma", "likelihood", "none")


def test_model_operators():
    m = setkey(base(), "model", {"name": "effective", "operators": ["phi2", "phi8"]})
    bad(m, "model.operators[1]")
    bad(setkey(m, "model.operators", ["phi2", "phi2"]), "model.operators[1]", match="duplicate")
    bad(setkey(m, "model.operators", []), "model.operators", match="at least 1")


# --- scheme parameters --------------------------------------------------------------------------
@pytest.mark.parametrize("name", S.SCHEMES)
def test_scheme_defaults_and_foreign_params(name):
    c = parse_campaign(setkey(base(), "scheme", {"name": name}))
    assert c.scheme.to_dict() == {"name": name, **S.SCHEME_DEFAULTS[name]}
    foreign = "beta_min" if name != "vp" else "mu2"
    bad(setkey(base(), "scheme", {"name": name, foreign: 1.0}), f"scheme.{foreign}", match="unknown key")


def test_scheme_cross_checks():
    bad(setkey(base(), "scheme", {"name": "carosso", "T": 1.0, "t_min": 1.0}), "scheme.t_min")
    bad(setkey(base(), "scheme", {"name": "vp", "beta_min": 5.0, "beta_max": 1.0}), "scheme.beta_max")
    bad(setkey(base(), "scheme", {"name": "ve", "sigma_min": 5.0, "sigma_max": 5.0}), "scheme.sigma_max")
    bad(setkey(base(), "scheme", {"name": "polchinski", "m02": 0.0}), "scheme.m02")


# --- cross-section checks ------------------------------------------------------------------------
def test_cross_section_checks():
    bad(setkey(base(), "measure.record_times", [1.0, 50.0]), "measure.record_times[1]", match="scheme.T")
    bad(setkey(base(), "measure.record_times", [2.0, 1.0]), "measure.record_times[1]", match="increasing")
    bad(setkey(base(), "measure.record_times", [-1.0]), "measure.record_times[0]")
    bad(setkey(setkey(base(), "sample.n_samples", 16), "measure.n_bins", 32), "measure.n_bins")
    bad(setkey(base(), "hmc", {"n_chains": 4, "chains_per_block": 4, "n_traj": 10, "thin": 10}),
        "measure.n_bins", match="HMC")
    bad(setkey(base(), "train", {"steps": 50, "warmup": 50}), "train.warmup")
    bad(setkey(base(), "hmc", {"n_chains": 64, "chains_per_block": 24}), "hmc.chains_per_block")
    bad(setkey(base(), "hmc", {"n_traj": 5, "thin": 10}), "hmc.thin")
    bad({**base(), "model": {"name": "unet", "levels": 4}}, "model.levels", match="8x8")
    m = {**base(), "grid": {"m2": [-0.5, 0.5], "lam": [1.0]}, "hmc": {"fourier_accel": True}}
    bad(m, "hmc.fa_mass2")
    parse_campaign(setkey(m, "hmc.fa_mass2", 0.5))
    parse_campaign(setkey(m, "grid.m2", [0.5]))


# --- output paths --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/tmp/x.h5", "../x.h5", "sub/../../x.h5", "a/../b.h5", "~/x.h5",
                                  "C:x.h5", "a\\b.h5", "", "./x.h5", "sub/", "a//b", ".."])
def test_results_must_stay_in_run_dir(name):
    bad(setkey(base(), "output.results", name), "output.results")


def test_results_and_dir_accepted():
    c = parse_campaign(setkey(setkey(base(), "output.results", "sub/res.h5"), "output.dir", "../runs/x"))
    assert c.output.results == "sub/res.h5" and c.output.dir == "../runs/x"  # dir kept as given


def test_names_default_from_file(tmp_path):
    f = tmp_path / "my scan.yaml"
    f.write_text(yaml.safe_dump(base()))
    c = load_campaign(f)
    assert c.name == "my_scan" and c.output.dir == "runs/my_scan" and c.source == str(f)
    assert parse_campaign({**base(), "name": "x1"}).output.dir == "runs/x1"


# --- physics and grid size ------------------------------------------------------------------------
def test_invalid_physics_at_grid_paths():
    bad(setkey(base(), "grid.lam", [1.0, -0.5]), "grid.lam[1]", match="lam must be >= 0")
    bad(setkey(base(), "grid.m2", [0.5, -0.1]), "grid.m2[1]", match="m2 > 0")
    bad(setkey(base(), "grid.m2", {"linspace": [-1.0, 1.0, 3]}), "grid.m2.linspace", match="m2 = -1.0")
    bad(setkey(base(), "grid.m2", [math.inf]), "grid.m2[0]", match="finite")
    bad(setkey(base(), "grid.lam", math.nan), "grid.lam", match="finite")
    bad(setkey(base(), "lattice.N", [8, 1]), "lattice.N[1]", match=">= 2")
    bad(setkey(base(), "lattice.N", [[8, 1]]), "lattice.N[0][1]")
    bad(setkey(base(), "lattice.N", [[8, 8, 8]]), "lattice.N[0]", match="d = 2")
    bad(setkey(base(), "lattice.d", 0), "lattice.d")
    m = {**base(), "theory": {"parametrization": "hopping"}, "grid": {"kappa": [0.1, -0.1], "lam_h": [0.01]}}
    bad(m, "grid.kappa[1]", match="kappa must be > 0")


def test_per_axis_shapes_and_d():
    c = parse_campaign({**base(), "lattice": {"N": [[4, 6, 8], 4], "d": 3}})
    assert [p.N for p in c.points()] == [(4, 6, 8), (4, 4, 4)]
    bad({**base(), "lattice": {"N": [8, 8]}}, "lattice.N[1]", match="nested list")


@pytest.mark.parametrize("path,value,where", [
    ("grid.m2", [], "grid.m2"),
    ("grid.m2", {"range": [1.0, 0.5, 0.1]}, "grid.m2.range"),
    ("grid.lam", {"linspace": [0.5, 1.0, 0]}, "grid.lam.linspace[2]"),
    ("lattice.N", [], "lattice.N"),
    ("lattice.N", {"range": [8, 4, 2]}, "lattice.N.range"),
])
def test_empty_grids(path, value, where):
    bad(setkey(base(), path, value), where)


def test_grid_size_limit():
    big = setkey(base(), "grid", {"m2": {"linspace": [0.1, 1.0, 101]}, "lam": {"linspace": [0.0, 1.0, 100]}})
    bad(big, "grid", match="10100 points")
    assert len(parse_campaign(setkey(big, "grid.max_points", 10100)).points()) == 10100
    bad(setkey(base(), "grid.m2", {"linspace": [0.1, 1.0, 10**9]}), "grid.m2.linspace[2]", match="max_points")
    bad(setkey(base(), "grid.m2", {"range": [0.1, 1e9, 1e-9]}), "grid.m2.range", match="max_points")
    two = setkey(setkey(base(), "lattice.N", [8, 16]), "grid.m2", [0.5, 1.0])
    bad(setkey(two, "grid.max_points", 3), "grid", match="4 points")


def test_zip_grid():
    m = setkey(base(), "grid", {"m2": [-1.0, -0.5], "lam": [1.0, 2.0], "combine": "zip"})
    assert [(p.m2, p.lam) for p in parse_campaign(m).points()] == [(-1.0, 1.0), (-0.5, 2.0)]
    bad(setkey(m, "grid.lam", [1.0]), "grid", match="equal length")


# --- point ids ------------------------------------------------------------------------------------
def _ids(m):
    return [p.point_id for p in parse_campaign(m).points()]


def test_point_ids_depend_on_results_sections_only():
    m = setkey(base(), "grid.m2", [0.5, 1.0])
    ref = _ids(m)
    assert len(set(ref)) == 2 and all(len(i) == 16 for i in ref)
    for path, value in [("output.dir", "elsewhere"), ("output.save_samples", True),
                        ("resources.ranks_per_point", 4), ("checkpoint.keep", 9), ("name", "other"),
                        ("grid.max_points", 50)]:
        assert _ids(setkey(m, path, value)) == ref, path
    for path, value in [("seed", 1), ("train.lr", 1e-3), ("scheme.T", 30.0), ("hmc.n_traj", 800),
                        ("sample.n_steps", 200), ("model.channels", 8), ("measure.n_bins", 16),
                        ("train.zero_mode_weight", 40.0), ("model.time_freq", 16)]:
        assert not set(_ids(setkey(m, path, value))) & set(ref), path
    # a key of TrainSpec.LATER at its default stays out of the ids (old run dirs keep theirs)
    assert _ids(setkey(m, "train.zero_mode_weight", 1.0)) == ref
    assert _ids(setkey(m, "model.time_freq", 4)) == ref
    # adding a point leaves the ids of the others unchanged
    assert set(ref) < set(_ids(setkey(m, "grid.m2", [0.25, 0.5, 1.0])))


def test_point_ids_equal_for_equal_physics_in_either_parametrization():
    kappa, lam_h = 0.125, 0.0  # m2 = 1/kappa - 4 = 4, lam = 0
    hop = {**base(), "theory": {"parametrization": "hopping"}, "grid": {"kappa": [kappa], "lam_h": [lam_h]}}
    std = setkey(setkey(base(), "grid.m2", [4.0]), "grid.lam", [0.0])
    assert _ids(hop) == _ids(std)
    (p,) = parse_campaign(hop).points()
    assert (p.kappa, p.lam_h, p.m2, p.lam) == (0.125, 0.0, 4.0, 0.0)


def test_point_lookup_and_summary():
    c = parse_campaign(setkey(base(), "grid.m2", {"linspace": [0.1, 1.0, 30]}))
    p = c.points()[7]
    assert c.point(p.point_id) == p
    with pytest.raises(KeyError):
        c.point("0" * 16)
    text = c.summary()
    assert "30 grid point(s)" in text and c.points()[0].point_id in text and "10 more" in text


# --- YAML and files -------------------------------------------------------------------------------
def yaml_bad(text, path="", match=None):
    with pytest.raises(ConfigError) as info:
        parse_yaml(text)
    assert info.value.path == path, str(info.value)
    assert "\n" not in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)


def test_malformed_yaml_names_line_and_column():
    yaml_bad("schema_version: 1\nlattice: {N: [8\ngrid: x\n", match="line ")
    yaml_bad("schema_version: 1\nlattice:\n\tN: 8\n", match="line 3")
    yaml_bad("a: 1\n---\nb: 2\n", match="malformed YAML")
    yaml_bad("a: *missing\n", match="line 1")


def test_top_level_must_be_mapping():
    yaml_bad("", match="empty document")
    yaml_bad("- 1\n- 2\n", match="mapping")
    yaml_bad("just text\n", match="mapping")


def test_duplicate_keys_rejected():
    text = yaml.safe_dump(base()) + "lattice: {N: [16]}\n"
    yaml_bad(text, "lattice", match="duplicate key")
    yaml_bad("schema_version: 1\nhmc: {n_chains: 4, n_chains: 8}\n", "hmc.n_chains", match="duplicate")


def test_unsafe_tags_rejected():
    yaml_bad("!!python/object/apply:os.system ['true']\n", match="malformed YAML")


def test_load_campaign_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_campaign(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_campaign(tmp_path)
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"schema_version: 1\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_campaign(f)


def test_schema_version():
    bad(setkey(base(), "schema_version", 2), "schema_version", match="unsupported")
    bad(setkey(base(), "schema_version", True), "schema_version")


def test_model_time_freq_reaches_the_time_embedding():
    """model.time_freq K sets every model's n_freq: the embedding's first layer then reads
    2 + 4K features (rgdist.models.layers.TimeEmbedding); at the default it is not passed."""
    import torch

    from rgdist.campaign import build
    from rgdist.lattice import Lattice
    from rgdist.models.layers import TimeEmbedding

    lat = Lattice(4)
    for name in ("conv", "effective", "trace"):
        m = setkey(setkey(base(), "model.name", name), "model.gaussian_exact", False)
        if name == "effective":
            m = setkey(m, "model.residual", True)
        c0 = parse_campaign(m)
        assert "n_freq" not in c0.model.params and "time_freq" not in c0.model.to_dict()
        c = parse_campaign(setkey(m, "model.time_freq", 16))
        assert c.model.time_freq == 16 and c.model.to_dict()["time_freq"] == 16
        scheme = build.scheme_for(c.scheme, lat)
        net = build.model_for(c.model, lat, scheme, None, torch.Generator().manual_seed(0), "cpu")
        embeds = [e for e in net.modules() if isinstance(e, TimeEmbedding)]
        assert embeds and all(e.n_freq == 16 and e.fc1.weight.shape[1] == 2 + 4 * 16
                              for e in embeds), name


def test_model_zero_mode_head_key():
    m = setkey(base(), "model.name", "effective")
    ref = _ids(m)
    on = parse_campaign(setkey(m, "model.zero_mode_head", True))
    assert on.model.params["zero_mode_head"] is True and on.model.to_dict()["zero_mode_head"] is True
    assert not set(_ids(setkey(m, "model.zero_mode_head", True))) & set(ref)
    assert _ids(setkey(m, "model.zero_mode_head", False)) == ref
    assert "zero_mode_head" not in parse_campaign(m).model.to_dict()
    bad(setkey(m, "model.zero_mode_head", "yes"), "model.zero_mode_head")
    bad(setkey(setkey(m, "model.zero_mode_head", True), "model.gaussian_exact", False),
        "model.zero_mode_head", "gaussian_exact")
    bad(setkey(setkey(m, "model.zero_mode_head", True), "model.scope", "grid"),
        "model.zero_mode_head", "point")
