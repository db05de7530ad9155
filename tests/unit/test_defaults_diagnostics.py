"""Defaults that cannot mislead: one table of scheme defaults, the leftover / dynamic-range /
sampler-bias diagnostics of rgdist.campaign.diagnostics, and every default solver combination
reproducing the free theory's G2 with the exact Gaussian score (or being refused).

Statistics: for n independent samples, each mode's estimate |phi~(p)|^2/V averaged over the
samples has a relative standard error ~ 1/sqrt(n) (sqrt(2/n) for the real modes p = -p); p
and -p carry the same number, so only one of each pair is tested. Errors are measured from
the samples; fixed seeds; per-mode bounds |z| < 4.5 (about 35 independent modes on 8^2:
a false alarm has probability ~ 2e-4) and chi^2 within 5 sigma of its dof.
"""
import inspect
import math
import zlib

import numpy as np
import pytest
import torch

from rgdist.campaign import diagnostics as D
from rgdist.campaign import spec as S
from rgdist.campaign.spec import parse_campaign
from rgdist.errors import ConfigError
from rgdist.lattice import Lattice
from rgdist.rg import SCHEMES, build_scheme
from rgdist.sample import sample_ensemble, solve
from rgdist.sample import solvers as SV
from rgdist.sample.audit import exact_output_spectrum, gaussian_output_spectrum, sampler_bias
from rgdist.catalog import MAX_LEFTOVER, SCHEME_DEFAULTS

from test_solvers import independent_modes  # one of each pair (p, -p)

torch.set_num_threads(1)
M2 = 0.5


def campaign(scheme=None, sample=None, N=8, m2=M2, lam=0.0, **extra):
    m = {"schema_version": 1, "lattice": {"N": [N]}, "grid": {"m2": [m2], "lam": [lam]},
         "scheme": scheme or {}, "sample": sample or {}, **extra}
    return parse_campaign(m)


def zscores(lat, phi, expected):
    power = lat.fft(phi).abs().square() / lat.volume
    mean, err = power.mean(0), power.std(0) / math.sqrt(phi.shape[0])
    mask = independent_modes(lat)
    return ((mean - expected) / err)[mask], (mean / expected - 1)[mask]


# ---------------------------------------------------------------- 3. defaults from one place
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_scheme_defaults_come_from_one_table(name):
    cls = SCHEMES[name]
    sig = inspect.signature(cls.__init__).parameters
    ctor = {k: p.default for k, p in sig.items() if k not in ("self", "lattice")}
    table = dict(SCHEME_DEFAULTS[name])
    assert cls.default_t_min == table.pop("t_min")
    assert ctor == table and list(ctor) == list(table)  # same keys, same order, same values
    assert S.SCHEME_DEFAULTS is SCHEME_DEFAULTS
    c = campaign({"name": name})
    assert c.scheme.params == ctor and c.scheme.t_min == cls.default_t_min
    built = build_scheme(name, Lattice(8), **c.scheme.params)
    assert built.params() == cls(Lattice(8)).params() == ctor


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("N", (8, 32))
def test_default_schemes_pass_their_own_checks(name, N):
    """At the defaults: the free field's leftover is under MAX_LEFTOVER, the prior's dynamic
    range under float64's 1/eps^2, and `validate`'s pre-check passes."""
    c = campaign({"name": name}, N=N)
    sch = D.build(c, (N, N))
    lo = sch.leftover(Lattice(N).free_propagator(M2))
    assert lo["max"] <= MAX_LEFTOVER, lo["max"]
    assert lo["dynamic_range"] <= D.ROUNDING_RANGE["float64"]
    assert any("dynamic range" in line for line in D.precheck(c))


def test_polchinski_default_is_T2_and_samples_finite_and_unbiased():
    """`scheme: {name: polchinski}` is T = 2 (the class default; it was 3.0, which spans 1e82
    and gave NaN), and the default sampler reproduces G2 there."""
    c = campaign({"name": "polchinski"}, sample={"n_samples": 3000})
    assert c.scheme.T == 2.0 == SCHEME_DEFAULTS["polchinski"]["T"]
    sch = D.build(c, (8, 8))
    lat, G = sch.lattice, sch.lattice.free_propagator(M2)
    res = sample_ensemble(lambda p, t: sch.gaussian_score(p, t, G), sch, 3000, n_steps=c.sample.n_steps,
                          solver=c.sample.solver, grid=c.sample.grid, batch_size=3000, seed_streams=7,
                          prior_G=G, t_min=c.scheme.t_min)
    assert bool(torch.isfinite(res.samples).all())
    z, _ = zscores(lat, res.samples, G)
    assert float(z.abs().max()) < 4.5


def test_dynamic_range_refusal_names_the_cause_not_n_steps():
    for T in (3.0, 2.75):
        c = campaign({"name": "polchinski", "T": T})
        with pytest.raises(ConfigError) as info:
            D.precheck(c)
        err = str(info.value)
        assert info.value.path == "scheme.T" and "dynamic range" in err and "lower scheme.T" in err
        assert "cannot help" in err and "\n" not in err
    # float32 models round sooner: T = 2.1 (range 2e14) passes in float64 only
    D.precheck(campaign({"name": "polchinski", "T": 2.1}, model={"dtype": "float64"}))
    with pytest.raises(ConfigError, match="model.dtype float32"):
        D.precheck(campaign({"name": "polchinski", "T": 2.1}, model={"dtype": "float32"}))


def test_nonfinite_message_blames_the_dynamic_range_only_when_it_is_the_cause():
    G = Lattice(8).free_propagator(M2)
    wide = campaign({"name": "polchinski", "T": 3.0, "mu2": 0.5})
    msg = D.nonfinite_message(wide, D.build(wide, (8, 8)), G, "exponential", 0)
    assert "dynamic range" in msg and "lower scheme.T" in msg and "n_steps" not in msg
    narrow = campaign({"name": "carosso"})
    msg = D.nonfinite_message(narrow, D.build(narrow, (8, 8)), G, "exponential", 0)
    assert "learned score" in msg and "train.steps" in msg


# ---------------------------------------------------------------- 1. leftover
def test_leftover_is_stored_and_checked_on_the_given_spectrum():
    c = campaign({"name": "carosso", "T": 10.0, "mu2": 0.01})
    sch = D.build(c, (8, 8))
    G = Lattice(8).free_propagator(0.05)
    lo = sch.leftover(G)
    assert lo["max"] > MAX_LEFTOVER  # 1.8 here: the zero mode is mostly data at T
    with pytest.raises(ConfigError) as info:
        D.point_diagnostics(c, sch, G, "at a test point")
    err = str(info.value)
    assert info.value.path == "scheme.T" and "scheme.T" in err and "scheme.mu2" in err
    assert f"{lo['max']:.3g}" in err and "scheme.max_leftover = 0.1" in err and "\n" not in err
    # accepted (report only) with max_leftover: null; the arrays hold the same numbers
    ok = campaign({"name": "carosso", "T": 10.0, "mu2": 0.01, "max_leftover": None})
    out = D.point_diagnostics(ok, sch, G, "at a test point")
    assert float(out["leftover/max"]) == lo["max"] and float(out["leftover/mean"]) == lo["mean"]
    assert float(out["leftover/dynamic_range"]) == lo["dynamic_range"]
    assert np.array_equal(out["leftover/ratio"], lo["ratio"].numpy())
    assert math.isnan(float(out["leftover/limit"]))
    # a threshold above the value passes too
    D.point_diagnostics(campaign({"name": "carosso", "T": 10.0, "mu2": 0.01,
                                  "max_leftover": 1.01 * lo["max"]}), sch, G, "here")


def test_leftover_fix_names_the_scheme_knobs():
    G = Lattice(8).free_propagator(0.05)
    for scheme, path, knob in (({"name": "polchinski", "mu2": 0.0}, "scheme.mu2", "scheme.mu2"),
                               ({"name": "renormalized_polchinski", "mu2": 0.0, "T": 1.0}, "scheme.mu2", "scheme.T"),
                               ({"name": "ve", "sigma_max": 1.0}, "scheme.sigma_max", "sigma_max")):
        c = campaign(scheme)
        with pytest.raises(ConfigError) as info:
            D.point_diagnostics(c, D.build(c, (8, 8)), G, "here")
        assert info.value.path == path and knob in str(info.value), str(info.value)


def test_validate_bound_on_the_zero_mode_spectrum_is_the_threshold():
    """`validate` prints the largest G(0) the leftover limit tolerates: G(0) just under it
    passes the check, just over it fails."""
    c = campaign({"name": "carosso"}, lam=1.0, m2=-1.0)
    lines = "\n".join(D.precheck(c))
    assert "free-field estimate" in lines and "lam ignored" in lines
    sch = D.build(c, (8, 8))
    bound = float(MAX_LEFTOVER * sch.Sigma(sch.T)[0, 0] / sch.A(sch.T)[0, 0] ** 2)
    assert f"G(0) = V <M^2> <= {bound:.3g}" in lines
    G = Lattice(8).free_propagator(1.0)
    for factor, passes in ((0.999, True), (1.001, False)):
        G2 = G.clone()
        G2[0, 0] = factor * bound
        assert (sch.leftover(G2)["max"] <= MAX_LEFTOVER) == passes


def test_free_field_points_are_checked_exactly_before_anything_runs():
    bad = campaign({"name": "polchinski", "mu2": 0.0}, m2=0.3)  # lam = 0: exact spectrum
    with pytest.raises(ConfigError, match="scheme.mu2.*free propagator"):
        D.precheck(bad)
    # the same scheme with lam > 0 is only estimated (not binding)
    lines = "\n".join(D.precheck(campaign({"name": "polchinski", "mu2": 0.0}, m2=0.3, lam=1.0)))
    assert "over the limit" in lines


def test_new_keys_keep_point_ids_and_round_trip():
    ref = campaign()
    explicit = campaign({"max_leftover": MAX_LEFTOVER}, {"max_bias": "auto"})
    assert [p.point_id for p in explicit.points()] == [p.point_id for p in ref.points()]
    assert "max_leftover" not in ref.scheme.to_dict() and "max_bias" not in ref.sample.to_dict()
    other = campaign({"max_leftover": None}, {"max_bias": 0.02})
    assert other.scheme.max_leftover is None and other.sample.bias_limit == 0.02
    assert parse_campaign(other.to_dict()) == other
    assert ref.sample.bias_limit == 0.5 / math.sqrt(1024)
    for section, key, value in (("scheme", "max_leftover", 0.0), ("scheme", "max_leftover", "x"),
                                ("sample", "max_bias", -1.0), ("sample", "max_bias", True)):
        with pytest.raises(ConfigError) as info:
            campaign(**{section: {key: value}})
        assert info.value.path == f"{section}.{key}"


# ---------------------------------------------------------------- 2. solver defaults
def test_default_snr_and_the_exponential_solver_needs_G():
    assert SV.DEFAULT_SNR == 0.05
    assert inspect.signature(solve).parameters["snr"].default == SV.DEFAULT_SNR
    assert inspect.signature(sample_ensemble).parameters["snr"].default == SV.DEFAULT_SNR
    lat = Lattice(8)
    sch = build_scheme("vp", lat)
    G = lat.free_propagator(M2)
    gen = torch.Generator().manual_seed(0)
    phi = sch.sample_prior(2, gen, G=G)
    for solver in ("exponential", "pc"):
        with pytest.raises(ValueError, match="needs the reference spectrum G.*prior_G.*ancestral"):
            solve(lambda p, t: sch.gaussian_score(p, t, G), sch, phi, sch.time_grid(4),
                  solver=solver, generator=gen)
    # the ancestral step is still there on request
    out, _ = solve(lambda p, t: sch.gaussian_score(p, t, G), sch, phi, sch.time_grid(4),
                   solver="ancestral", generator=gen)
    assert out.shape == phi.shape


def test_audit_matches_an_exact_linear_run():
    """Heun's method with the exact score is deterministic and linear: feeding it one field
    per mode's eigenvector is exact, so the audit's per-mode factor can be checked to rounding
    (the audit's V with V0 = P_T, here via the amplitude: V = f^2 P_T, no noise)."""
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    for name in ("carosso", "vp", "renormalized_polchinski"):
        sch = build_scheme(name, lat)
        times = sch.time_grid(30, "log")
        phi = lat.colored_noise(sch.prior_spectrum(G), 4, torch.Generator().manual_seed(1))
        out, _ = solve(lambda p, t: sch.gaussian_score(p, t, G), sch, phi, times, solver="heun_ode",
                       denoise=False)
        f = lat.fft(out) / lat.fft(phi)
        V = gaussian_output_spectrum(sch, times, G, "heun_ode", denoise=False)
        assert torch.allclose(f.real.mean(0) ** 2 * sch.prior_spectrum(G), V, rtol=1e-8), name
        assert float(f.imag.abs().max()) < 1e-8
    # the exponential solver with the reference spectrum is exact: the audit says so
    sch = build_scheme("carosso", lat)
    b = sampler_bias(sch, sch.time_grid(7), G, "exponential")
    assert b["max_discretization"] < 1e-12
    assert torch.allclose(b["spectrum"], exact_output_spectrum(sch, sch.default_t_min, G), rtol=1e-12)


N_SAMPLES = 2000
CAMPAIGN_SOLVERS = S.SOLVERS


@pytest.mark.parametrize("solver", CAMPAIGN_SOLVERS)
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_default_combination_reproduces_G2_or_is_refused(name, solver):
    """Each scheme at its defaults with each solver at the default grid and step count
    (`sample: {solver: ...}`), on the free field (exact spectrum, so the campaign's pre-check
    is binding): either the pre-check passes and the sampled G2 equals the free propagator
    within its errors (and equals the audit's prediction), or it refuses with a ConfigError
    that names a setting which passes."""
    c = campaign({"name": name}, {"solver": solver, "n_samples": N_SAMPLES, "batch_size": N_SAMPLES})
    sch = D.build(c, (8, 8))
    lat, G = sch.lattice, sch.lattice.free_propagator(M2)
    s = c.sample
    times = sch.time_grid(s.n_steps, s.grid, c.scheme.t_min)
    b = sampler_bias(sch, times, G, solver, denoise=s.denoise)
    refused = b["max_discretization"] > s.bias_limit
    # sample it unless unstable (growth by 1e70 leaks float64 rounding of the exploding modes
    # into every other mode through the FFTs, which no closed form describes)
    if b["max_discretization"] < 10:
        gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{solver}".encode()))
        phi_T = sch.sample_prior(N_SAMPLES, gen, G=G)
        phi, _ = solve(lambda p, t: sch.gaussian_score(p, t, G), sch, phi_T, times, solver=solver,
                       generator=gen, denoise=s.denoise, G=G)
        z, _ = zscores(lat, phi, G)
        dof = z.numel()
        # the audit predicts the sampled spectrum, refused or not
        z_audit, _ = zscores(lat, phi, b["spectrum"])
        assert abs(float(z_audit.square().sum()) - dof) < 5 * math.sqrt(2 * dof), (name, solver)
    if refused:
        with pytest.raises(ConfigError) as info:
            D.precheck(c)
        err = str(info.value)
        assert info.value.path == "sample.solver" and "sample.max_bias" in err, err
        alt = D.suggest(c, sch, G, s.bias_limit)
        assert alt and alt.split(" (")[0] in err, (alt, err)
        if solver != "exponential":
            assert "sample.solver: exponential" in err
        # the suggestion really passes: apply it and re-run the pre-check
        keys = dict(kv.split(": ") for kv in alt.split(" (")[0].split(", "))
        fixed = {"solver": solver, "n_samples": N_SAMPLES}
        fixed.update({k.split(".")[1]: (int(v) if k.endswith("n_steps") else v) for k, v in keys.items()})
        D.precheck(campaign({"name": name}, fixed))
        return
    D.precheck(c)
    assert float(z.abs().max()) < 4.5, (name, solver, float(z.abs().max()))
    assert abs(float(z.square().sum()) - dof) < 5 * math.sqrt(2 * dof)


def test_former_defaults_are_refused_with_the_fix():
    """The biased combinations named in the report: snr 0.16 is no longer the default (pc
    passes above), heun_ode on the uniform grid at the Carosso defaults is refused in favour
    of another grid, and Euler-Maruyama there is unstable."""
    for solver, fix in (("heun_ode", "sample.grid: log"), ("euler_maruyama", "sample.n_steps")):
        with pytest.raises(ConfigError) as info:
            D.precheck(campaign({"name": "carosso"}, {"solver": solver}))
        assert fix in str(info.value), str(info.value)
    sch = build_scheme("carosso", Lattice(8))
    G = Lattice(8).free_propagator(M2)
    times = sch.time_grid(100)
    old = sampler_bias(sch, times, G, "pc", snr=0.16)["max_discretization"]
    new = sampler_bias(sch, times, G, "pc")["max_discretization"]
    assert new < old / 5, (old, new)  # the Langevin bias scales like snr^2 (x 1/10)
