"""rgdist.catalog is the one table of names, parameters and defaults: the library classes'
constructor defaults equal it, the campaign schema resolves to it, and the rules both apply
(parameter bounds, density/integrator pairings, volume limits) are coded once."""
import dataclasses
import inspect
import subprocess
import sys

import pytest

from rgdist import catalog as K
from rgdist.campaign import spec as S
from rgdist.campaign.spec import parse_campaign
from rgdist.errors import ConfigError


def base(**sections):
    return {"schema_version": 1, "lattice": {"N": [8]}, "grid": {"m2": [0.5], "lam": [0.0]},
            **sections}


def signature_defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


# --- schemes ---------------------------------------------------------------------------------
def test_scheme_names():
    from rgdist.rg import SCHEMES

    assert tuple(SCHEMES) == K.SCHEMES == S.SCHEMES
    assert K.SCHEMES == ("carosso", "polchinski", "renormalized_polchinski", "vp", "ve")


@pytest.mark.parametrize("name", K.SCHEMES)
def test_scheme_class_defaults_are_the_catalog(name):
    """The check that catches a drift such as T = 3.0 in the class vs 2.0 in the schema."""
    from rgdist.lattice import Lattice
    from rgdist.rg import SCHEMES, build_scheme

    cls = SCHEMES[name]
    table = dict(K.SCHEME_DEFAULTS[name])
    t_min = table.pop("t_min")
    defaults = signature_defaults(cls.__init__)
    assert defaults == table and list(defaults) == list(table)  # every keyword, in order
    assert cls.default_t_min == t_min
    assert build_scheme(name, Lattice(4)).params() == table


@pytest.mark.parametrize("name", K.SCHEMES)
def test_schema_resolves_scheme_defaults_to_the_catalog(name):
    c = parse_campaign(base(scheme={"name": name}))
    assert c.scheme.to_dict() == {"name": name, **K.SCHEME_DEFAULTS[name]}
    assert c.scheme.params == {k: v for k, v in K.SCHEME_DEFAULTS[name].items() if k != "t_min"}
    assert c.scheme.t_min == K.SCHEME_DEFAULTS[name]["t_min"]


BAD_SCHEME = [("carosso", "T", 0.0), ("carosso", "mu2", -0.5), ("polchinski", "Lambda0", 0.0),
              ("polchinski", "m02", -1.0), ("renormalized_polchinski", "mu2", -1e-3),
              ("vp", "beta_min", -0.1), ("vp", "beta_max", 0.0), ("vp", "beta_max", 0.05),
              ("ve", "sigma_min", 0.0), ("ve", "sigma_max", 0.01), ("ve", "T", -1.0)]


@pytest.mark.parametrize("name,key,value", BAD_SCHEME)
def test_scheme_rules_are_the_librarys(name, key, value):
    """The library refuses the value with ValueError, the schema with ConfigError at
    scheme.<key>, both with the one message of rgdist.catalog.check_scheme_params."""
    from rgdist.lattice import Lattice
    from rgdist.rg import build_scheme

    with pytest.raises(ValueError) as lib:
        build_scheme(name, Lattice(4), **{key: value})
    with pytest.raises(ConfigError) as cfg:
        parse_campaign(base(scheme={"name": name, key: value}))
    assert isinstance(lib.value, K.ParameterError) and lib.value.key == key
    assert cfg.value.path == f"scheme.{key}"
    assert str(cfg.value) == f"scheme.{key}: {lib.value.message}"
    assert str(lib.value) == f"{key} {lib.value.message}"
    params = {**K.SCHEME_DEFAULTS[name], key: value}
    with pytest.raises(K.ParameterError):
        K.check_scheme_params(name, params)
    K.check_scheme_params(name, dict(K.SCHEME_DEFAULTS[name]))


def test_t_min_below_T():
    with pytest.raises(K.ParameterError, match="t_min must be < T = 1.0"):
        K.check_scheme_params("vp", {**K.SCHEME_DEFAULTS["vp"], "t_min": 1.0})
    with pytest.raises(ConfigError) as info:
        parse_campaign(base(scheme={"name": "vp", "t_min": 1.0}))
    assert info.value.path == "scheme.t_min"


# --- models ----------------------------------------------------------------------------------
def test_model_names():
    from rgdist.models import MODELS, OPERATORS
    from rgdist.models.layers import DTYPES

    assert tuple(MODELS) == K.MODELS == S.MODELS == ("conv", "unet", "trace", "effective")
    assert OPERATORS is K.OPERATORS and S.OPERATORS is K.OPERATORS
    assert tuple(DTYPES) == K.DTYPES == S.DTYPES


@pytest.mark.parametrize("name", K.MODELS)
def test_model_class_defaults_are_the_catalog(name):
    """Every catalog parameter is a constructor keyword with the catalog's default, or (the
    effective model's residual net) a build_model keyword whose default is the catalog's."""
    from rgdist.models import MODELS, allowed_params

    table = K.MODEL_PARAMS[name]
    defaults = signature_defaults(MODELS[name].__init__)
    builder_only = {"residual", "residual_channels", "residual_blocks"} if name == "effective" else set()
    in_class = {k: v for k, v in table.items() if k not in builder_only}
    assert in_class == {k: defaults[k] for k in in_class}
    assert set(table) <= set(allowed_params(name))
    if name == "effective":  # the class takes the net itself (None: none), build_model the flag
        assert defaults["residual"] is None and table["residual"] is False
        assert "residual_channels" not in defaults and "residual_blocks" not in defaults


def test_effective_model_built_with_catalog_defaults():
    """build_model's defaults of the effective model: all catalog operators, no residual net;
    residual=True adds a ConvScore of residual_channels x residual_blocks."""
    from rgdist.lattice import Lattice
    from rgdist.models import ConvScore, build_model

    table = K.MODEL_PARAMS["effective"]
    plain = build_model("effective", Lattice(4))
    assert plain.operators == table["operators"] == K.OPERATORS and plain.residual is None
    assert table["residual"] is False
    with_net = build_model("effective", Lattice(4), residual=True)
    assert isinstance(with_net.residual, ConvScore)
    assert len(with_net.residual.blocks) == table["residual_blocks"]
    assert with_net.residual.conv_in.weight.shape[0] == table["residual_channels"]


@pytest.mark.parametrize("name", K.MODELS)
def test_schema_resolves_model_defaults_to_the_catalog(name):
    lattice = {"N": [8]}
    c = parse_campaign({**base(model={"name": name}), "lattice": lattice})
    want = {k: (list(v) if isinstance(v, tuple) else v) for k, v in K.MODEL_PARAMS[name].items()}
    assert c.model.params == want
    assert S.MODEL_PARAMS is K.MODEL_PARAMS


# --- training ----------------------------------------------------------------------------------
def test_train_config_defaults_are_the_catalog():
    from rgdist.train import TrainConfig

    lib = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert {k: lib[k] for k in K.TRAIN_DEFAULTS} == K.TRAIN_DEFAULTS
    spec = {f.name: f.default for f in dataclasses.fields(S.TrainSpec)}
    assert spec == K.CAMPAIGN_TRAIN_DEFAULTS
    # the campaign's preset differs from the library's in exactly these keys
    assert {k for k in spec if spec[k] != K.TRAIN_DEFAULTS[k]} == {"batch_size", "lr", "warmup"}
    assert set(S.TrainSpec().as_kwargs()) <= set(lib)
    TrainConfig(**S.TrainSpec().as_kwargs())


def test_library_name_tables_are_the_catalogs():
    from rgdist.rg import GRID_KINDS
    from rgdist.sample import solvers
    from rgdist.train import T_SAMPLERS, WEIGHTINGS, objectives, trainer

    assert solvers.SOLVERS is K.SOLVERS and S.SOLVERS is K.SOLVERS
    assert set(K.SOLVERS) <= set(solvers.ALL_SOLVERS)
    assert GRID_KINDS is K.TIME_GRIDS and S.TIME_GRIDS is K.TIME_GRIDS
    assert WEIGHTINGS is K.WEIGHTINGS and T_SAMPLERS is K.T_SAMPLERS
    assert S.WEIGHTINGS is K.WEIGHTINGS and S.T_SAMPLERS is K.T_SAMPLERS
    assert objectives.OBJECTIVES is K.OBJECTIVES and S.OBJECTIVES is K.OBJECTIVES
    assert trainer.LR_SCHEDULES is K.LR_SCHEDULES is S.LR_SCHEDULES
    assert trainer.KL_GRIDS is K.KL_GRIDS and trainer.KL_INTEGRATORS is K.KL_INTEGRATORS
    assert trainer.MAX_KL_STEPS == K.MAX_KL_STEPS == S.MAX_KL_STEPS
    assert S.INTEGRATORS is K.HMC_INTEGRATORS and S.FLOW_INTEGRATORS is K.INTEGRATORS
    assert S.LIKELIHOODS is K.DENSITY_METHODS and S.CORRECT_METHODS is K.CORRECT_METHODS


@pytest.mark.parametrize("path,value", [("train.kl_steps", K.MAX_KL_STEPS + 1),
                                        ("train.kl_steps", 0)])
def test_kl_step_limit_is_shared(path, value):
    from rgdist.train import TrainConfig

    with pytest.raises(ValueError, match="kl_steps"):
        TrainConfig(kl_steps=value)
    with pytest.raises(ConfigError) as info:
        parse_campaign(base(train={"kl_steps": value}))
    assert info.value.path == path
    TrainConfig(kl_steps=K.MAX_KL_STEPS)
    parse_campaign(base(train={"kl_steps": K.MAX_KL_STEPS}))


# --- densities and the correction -----------------------------------------------------------------
PAIRS = [(m, i) for m in K.DENSITY_METHODS for i in K.INTEGRATORS]


@pytest.mark.parametrize("method,integrator", PAIRS, ids=[f"{m}-{i}" for m, i in PAIRS])
def test_density_pairings_are_the_librarys(method, integrator):
    """The schema accepts a likelihood/integrator pair exactly when check_density does (with
    the trace model, which every integrator may use), and names correct.integrator."""
    try:
        K.check_density(method, integrator)
        ok, err = True, None
    except K.ParameterError as exc:
        ok, err = False, exc
    m = base(model={"name": "trace"},
             correct={"method": "reweight", "likelihood": method, "integrator": integrator})
    if ok:
        assert parse_campaign(m).correct.integrator == integrator
    else:
        with pytest.raises(ConfigError) as info:
            parse_campaign(m)
        assert info.value.path == f"correct.{err.key}" == "correct.integrator"
        assert str(info.value) == f"correct.integrator: {err.message}"
    # three pairs are refused: the discrete-only integrators with a continuous method (4),
    # split with hutchinson, rk4 with discrete
    refused = integrator in K.DISCRETE_ONLY and method != "discrete" or (
        (integrator, method) in (("split", "hutchinson"), ("rk4", "discrete")))
    assert ok is not refused


def test_check_density_names():
    with pytest.raises(K.ParameterError) as info:
        K.check_density("exact", "heun")
    assert info.value.key == "method"
    with pytest.raises(K.ParameterError) as info:
        K.check_density("trace", "rk5")
    assert info.value.key == "integrator"


@pytest.mark.parametrize("method", K.DENSITY_METHODS)
@pytest.mark.parametrize("model", [{"name": "conv"}, {"name": "trace"},
                                   {"name": "effective", "residual": False},
                                   {"name": "effective", "residual": True}])
def test_schema_volume_limit_is_volume_limit(method, model):
    structured = model["name"] == "effective" and not model["residual"]
    limit = K.volume_limit(method, structured=structured, traced=model["name"] == "trace")
    integrator = "rk4" if method != "discrete" else "heun"
    m = base(model=model, correct={"method": "reweight", "likelihood": method,
                                   "integrator": integrator})
    if limit is None:
        parse_campaign({**m, "lattice": {"N": [40]}})  # V = 1600, beyond both limits
        return
    side = int(limit ** 0.5)
    assert side * side == limit
    parse_campaign({**m, "lattice": {"N": [side]}})
    with pytest.raises(ConfigError) as info:
        parse_campaign({**m, "lattice": {"N": [side, side + 1]}})
    assert info.value.path == "correct.likelihood" and f"V <= {limit}" in str(info.value)


def test_volume_limit_table():
    assert K.volume_limit("discrete") == K.MAX_EXACT_VOLUME == 256
    assert K.volume_limit("discrete", structured=True) == K.MAX_STRUCTURED_VOLUME == 1024
    assert K.volume_limit("trace") == 256 and K.volume_limit("trace", traced=True) is None
    assert K.volume_limit("trace", structured=True) is None and K.volume_limit("hutchinson") is None
    with pytest.raises(ValueError):
        K.volume_limit("exact")


# --- torch-free ------------------------------------------------------------------------------------
def test_catalog_and_schema_import_without_torch():
    code = ("import sys\nimport rgdist.catalog, rgdist.campaign.spec\n"
            "from rgdist.campaign.spec import load_campaign\n"
            "load_campaign('campaigns/default.yaml')\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
