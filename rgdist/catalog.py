"""The catalog: every name, parameter and default that both the library classes and the
campaign schema need, in one torch-free module (the schema validates without importing torch).
The classes read their defaults from here and the schema reads the same tables, so nothing is
copied and nothing can drift. Edit names and defaults here only. The rules that both sides
apply to these values (parameter bounds, which density method goes with which integrator,
volume limits) are here too, as plain functions raising :class:`ParameterError` (a
ValueError naming the parameter); the campaign layer turns it into a ConfigError at its key.

Contents: schemes (SCHEMES, SCHEME_DEFAULTS, SCHEME_BOUNDS, check_scheme_params,
MAX_LEFTOVER), models (MODELS, MODEL_PARAMS, OPERATORS, DTYPES), samplers (SOLVERS,
TIME_GRIDS), training (TRAIN_DEFAULTS, CAMPAIGN_TRAIN_DEFAULTS, LR_SCHEDULES, WEIGHTINGS,
T_SAMPLERS, OBJECTIVES, KL_GRIDS, KL_INTEGRATORS, MAX_KL_STEPS), the flow baseline
(CAMPAIGN_BASELINE_DEFAULTS), HMC (HMC_INTEGRATORS),
densities and the correction (DENSITY_METHODS, INTEGRATORS, DISCRETE_ONLY, PROBES,
CORRECT_METHODS, check_density, MAX_EXACT_VOLUME, MAX_STRUCTURED_VOLUME, volume_limit),
resources (DEVICES).

Scheme defaults (``SCHEME_DEFAULTS``, read by ``rgdist.rg.schemes``: constructor defaults and
``default_t_min``, and by ``rgdist.campaign.spec``):

``t_min`` is the smallest time of training and sampling; the other keys are the keyword
arguments of the scheme's constructor, in their order.

Why these values (free-field estimates; ``Scheme.leftover`` gives the exact numbers):

- carosso (T = 40, mu2 = 0.1): A_T = exp(-(phat^2 + mu2) T) <= exp(-4) on every mode; the
  leftover A_T^2 G / Sigma_T of the zero mode is 6.7e-5 G(0), below 0.1 while the data's
  G(0) = V <M^2> <= 1.5e3.
- polchinski, renormalized_polchinski (T = 2, Lambda0 = 4, m02 = 1, mu2 = 4): the prior
  spectrum of Polchinski spans exp(8 (e^(2T) - 1)/Lambda0^2) ~ 6e12 over the momenta (mu2
  cancels from that ratio), inside float64's 1/eps^2 = 2e31 (T = 3 gave 1e82 and NaN). The
  IR mass mu2 = 4 noises the low modes: A_T(0) = exp(-mu2 (e^(2T) - 1)/Lambda0^2) = 1.5e-6,
  so the zero mode's leftover is ~ 2e-6 G(0) (2e-12 G(0) renormalized; below 0.1 up to
  G(0) ~ 5e4, e.g. a 64^2 broken-phase lattice), where mu2 = 0 froze the zero mode and left
  the lowest non-zero modes mostly data (leftover 2.7-8.7 at N = 16). The range is
  mu2-independent but grows with d: exp(4d (e^(2T) - 1)/Lambda0^2) (6e17 in d = 3, beyond a
  float32 model's 7e13: `validate` refuses that pairing).
- vp, ve: the usual DDPM / score-SDE values.
"""
from __future__ import annotations


class ParameterError(ValueError):
    """A bad parameter value. ``key`` names the parameter, ``message`` says what is allowed;
    ``str()`` is ``"<key> <message>"`` (what a library caller sees)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key} {message}")
        self.key, self.message = key, message


# -- noising schemes (rgdist.rg.schemes) -------------------------------------------------------
SCHEME_DEFAULTS: dict[str, dict[str, float]] = {
    "carosso": {"T": 40.0, "mu2": 0.1, "t_min": 1e-3},
    "polchinski": {"T": 2.0, "Lambda0": 4.0, "m02": 1.0, "mu2": 4.0, "t_min": 1e-3},
    "renormalized_polchinski": {"T": 2.0, "Lambda0": 4.0, "m02": 1.0, "mu2": 4.0, "t_min": 1e-3},
    "vp": {"T": 1.0, "beta_min": 0.1, "beta_max": 20.0, "t_min": 1e-3},
    "ve": {"T": 1.0, "sigma_min": 0.01, "sigma_max": 100.0, "t_min": 1e-5},
}

SCHEMES = tuple(SCHEME_DEFAULTS)

#: Lower bound of every scheme parameter: (bound, bound allowed?). Read by the scheme
#: constructors and by the campaign's scheme section.
SCHEME_BOUNDS: dict[str, tuple[float, bool]] = {
    "T": (0.0, False), "t_min": (0.0, False), "mu2": (0.0, True), "Lambda0": (0.0, False),
    "m02": (0.0, False), "beta_min": (0.0, True), "beta_max": (0.0, False),
    "sigma_min": (0.0, False), "sigma_max": (0.0, False),
}
_WHAT = {"mu2": " (IR mass squared)", "m02": " (reference mass squared)"}


def check_scheme_params(name: str, params: dict) -> None:
    """The rules of scheme ``name``'s parameters (finite floats; any subset of the scheme's
    keys, t_min included): each above its bound (SCHEME_BOUNDS), t_min < T, vp's
    beta_max >= beta_min, ve's sigma_max > sigma_min. Raises ParameterError."""
    for key, value in params.items():
        low, closed = SCHEME_BOUNDS[key]
        if value < low if closed else value <= low:
            raise ParameterError(key, f"must be {'>=' if closed else '>'} {low}"
                                      f"{_WHAT.get(key, '')}, got {value}")
    if "t_min" in params and "T" in params and params["t_min"] >= params["T"]:
        raise ParameterError("t_min", f"must be < T = {params['T']}, got {params['t_min']}")
    if name == "vp" and {"beta_min", "beta_max"} <= params.keys() and (
            params["beta_max"] < params["beta_min"]):
        raise ParameterError("beta_max", f"must be >= beta_min = {params['beta_min']}, "
                                         f"got {params['beta_max']}")
    if name == "ve" and {"sigma_min", "sigma_max"} <= params.keys() and (
            params["sigma_max"] <= params["sigma_min"]):
        raise ParameterError("sigma_max", f"must be > sigma_min = {params['sigma_min']}, "
                                          f"got {params['sigma_max']}")


#: Largest leftover A_T^2 G / Sigma_T (max over the noised modes) a campaign accepts by
#: default (``scheme.max_leftover``). A mode whose data law is non-Gaussian keeps, at T, the
#: fraction (r / (1 + r))^2 of its standardized fourth cumulant (r = the leftover), which the
#: Gaussian prior replaces by 0: r <= 0.1 keeps that error below 0.83% of the data's own.
MAX_LEFTOVER = 0.1


# -- score models (rgdist.models) --------------------------------------------------------------
#: Local operators of the effective-action model, phi -> sum_x O(phi).
OPERATORS = ("phi2", "grad2", "phi4", "phi6")
#: Each model's architecture parameters and their defaults: the keyword arguments of
#: rgdist.models.build_model (= the model classes' constructor defaults; "residual",
#: "residual_channels", "residual_blocks" of the effective model are build_model's: a
#: ConvScore remainder of that size) and the keys of the campaign's model section.
MODEL_PARAMS: dict[str, dict] = {
    "conv": {"channels": 16, "blocks": 2},
    "unet": {"channels": 16, "levels": 2},
    "trace": {"channels": 8, "global_channels": 2, "radius": 1, "filter_rank": 8},
    "effective": {"operators": OPERATORS, "residual": False, "residual_channels": 16,
                  "residual_blocks": 2},
}
MODELS = tuple(MODEL_PARAMS)
#: Fourier harmonics of every model's time embedding (the models' n_freq; campaign key
#: model.time_freq) and the most a campaign may ask for.
TIME_FREQ_DEFAULT = 4
MAX_TIME_FREQ = 64
DTYPES = ("float32", "float64")


# -- reverse sampler (rgdist.sample.solvers, rgdist.rg.grids) ----------------------------------
#: SDE/ODE solvers offered to campaigns (rgdist.sample.solvers has one more for tests).
SOLVERS = ("euler_maruyama", "exponential", "pc", "heun_ode")
#: Time grids from T down to t_min.
TIME_GRIDS = ("uniform", "log", "snr")


# -- training (rgdist.train) --------------------------------------------------------------------
LR_SCHEDULES = ("cosine", "constant")
#: DSM mode weights lambda_t(p) and time samplers (rgdist.train.dsm).
WEIGHTINGS = ("sigma", "likelihood", "none")
T_SAMPLERS = ("uniform", "log", "log_is")
#: dsm | reverse_kl | path (rgdist.train.objectives).
OBJECTIVES = ("dsm", "reverse_kl", "path")
#: Grid and integrator of the reverse-KL probability-flow path.
KL_GRIDS = TIME_GRIDS
KL_INTEGRATORS = ("split", "rk4", "heun")
MAX_KL_STEPS = 10_000
#: rgdist.train.TrainConfig's defaults of the options a campaign's train section has too.
TRAIN_DEFAULTS: dict = {
    "steps": 1000, "batch_size": 64, "lr": 1e-3, "lr_schedule": "cosine", "warmup": 0,
    "ema_decay": 0.999, "grad_clip": 1.0, "weighting": "sigma", "t_sampler": "uniform",
    "max_seconds": None, "objective": "dsm", "kl_steps": 16, "kl_batch": None,
    "kl_grid": "snr", "kl_integrator": "split", "path_weight": 1.0,
    "zero_mode_weight": 1.0,
}
#: The campaign's train section: the same defaults but a larger batch, a larger learning rate
#: and a warm-up (the campaign's documented training preset; library callers that relied on
#: TrainConfig() keep theirs). These three keys are the only differences.
CAMPAIGN_TRAIN_DEFAULTS: dict = {**TRAIN_DEFAULTS, "batch_size": 128, "lr": 2e-3, "warmup": 50}
#: The campaign's ``baseline`` section (rgdist.flow.baseline: the CNF of Gerdes et al. trained
#: by reverse KL from the action alone): the preset measured in benchmarks/exact_scale.py (8
#: radius-1 channels, 4 magnetization channels, filter rank 8, 20 RK4 steps, prior mass
#: m0^2 = 0.5, batch 64, lr 2e-3 with 20 warm-up steps, cosine down to 5%, gradient norm
#: clipped at 1; 0 = no clipping, as in the train section), sized down to 200 steps.
#: ``tau_grid`` "auto": every ceil(n_steps / 10)-th RK4 step and tau = 1. The library's own
#: defaults (BaselineCNF, BaselineTrainConfig) are those of its tests and stay as they are.
CAMPAIGN_BASELINE_DEFAULTS: dict = {
    "steps": 200, "batch_size": 64, "lr": 2e-3, "lr_schedule": "cosine", "lr_min_ratio": 0.05,
    "warmup": 20, "grad_clip": 1.0, "n_steps": 20, "m0_sq": 0.5, "channels": 8,
    "global_channels": 4, "radius": 1, "filter_rank": 8, "dtype": "float64",
    "grad_checkpoint": True, "n_samples": 4096, "sample_batch": 256, "tau_grid": "auto",
    "sample_dtype": "auto",
}


# -- HMC (rgdist.lattice.hmc) and resources --------------------------------------------------------
HMC_INTEGRATORS = ("leapfrog", "omelyan")
DEVICES = ("auto", "cpu", "cuda")


# -- densities of the probability-flow sampler (rgdist.density) ----------------------
#: How the log-density of a sample is computed: "discrete" (exact density of the discrete map
#: run), "trace" (continuous-time formula with the exact divergence tr(df/dphi)), "hutchinson"
#: (stochastic trace estimator, any volume).
DENSITY_METHODS = ("discrete", "trace", "hutchinson")
#: Time integrators of the flow; the last two only with method "discrete".
INTEGRATORS = ("heun", "rk4", "split", "exponential", "implicit")
DISCRETE_ONLY = ("exponential", "implicit")
PROBES = ("rademacher", "gaussian")
#: Methods of the campaign's correction section (rgdist.correct): off | reweight | mh | both.
CORRECT_METHODS = ("off", "reweight", "mh", "both")


def check_density(method: str, integrator: str) -> None:
    """Whether density ``method`` and flow ``integrator`` go together; raises ParameterError
    (key "method" or "integrator")."""
    if method not in DENSITY_METHODS:
        raise ParameterError("method", f"must be one of {', '.join(DENSITY_METHODS)}; got {method!r}")
    if integrator not in INTEGRATORS:
        raise ParameterError("integrator", f"must be one of {', '.join(INTEGRATORS)}; "
                                           f"got {integrator!r}")
    if integrator in DISCRETE_ONLY and method != "discrete":
        raise ParameterError("integrator", f"{integrator!r} has only the exact density of its "
                                           f"discrete map: it needs density method 'discrete' "
                                           f"(got {method!r}); integrators 'heun' and 'rk4' "
                                           "serve the continuous-time methods")
    if integrator == "split" and method == "hutchinson":
        raise ParameterError("integrator", "'split' (linear part exact, channels by RK4) has the "
                                           "exact-trace density (method 'trace') or the exact "
                                           "density of its discrete map (method 'discrete'), "
                                           "not 'hutchinson'")
    if integrator == "rk4" and method == "discrete":
        raise ParameterError("integrator", "'rk4' integrates the continuous-time density "
                                           "(method 'trace' or 'hutchinson'); method 'discrete' "
                                           "needs integrator 'heun', 'exponential' or 'implicit'")


#: Largest volume for which a generic network's full V x V Jacobian is formed.
MAX_EXACT_VOLUME = 256
#: Largest volume for a dense determinant of a closed-form (structured) step Jacobian.
MAX_STRUCTURED_VOLUME = 1024


def volume_limit(method: str, structured: bool = False, traced: bool = False) -> int | None:
    """Largest lattice volume V for density ``method`` (None: any V).

    A generic network's Jacobian costs V vector-Jacobian products per evaluation, so "trace"
    and "discrete" need V <= MAX_EXACT_VOLUME. A structured model (effective action without
    residual net: Jacobian in closed form) has an O(V) exact trace (any V) and a dense V x V
    determinant for "discrete" (V <= MAX_STRUCTURED_VOLUME). An exact-trace model (``traced``,
    model "trace") has an O(V K) exact divergence (any V for "trace"), but its full Jacobian
    ("discrete") is autograd's. "hutchinson" works at any V.
    """
    if method not in DENSITY_METHODS:
        raise ValueError(f"method: must be one of {DENSITY_METHODS}, got {method!r}")
    if method == "hutchinson":
        return None
    if structured:
        return MAX_STRUCTURED_VOLUME if method == "discrete" else None
    if traced and method == "trace":
        return None
    return MAX_EXACT_VOLUME
