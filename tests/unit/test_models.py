"""Score models: symmetries by construction, closed-form operator gradients, registry, state."""
import math

import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice
from rgdist.models import (
    OPERATORS,
    ConvScore,
    EffectiveActionScore,
    GaussianExactScore,
    build_model,
    load_named_arrays,
    named_arrays,
    operator_gradients,
    operator_values,
)
from rgdist.rg import build_scheme

torch.set_num_threads(1)

MODEL_CASES = [("conv", {}), ("unet", {"levels": 2}), ("effective", {}),
               ("effective", {"residual": True, "residual_channels": 4})]


def randomize(model, seed=0, std=0.3):
    """Random O(1) parameters everywhere (the zero-initialized output layer would otherwise
    make symmetry checks trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def fields(lat, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn((batch, *lat.shape), generator=g, dtype=torch.float64)
    t = torch.rand(batch, generator=g, dtype=torch.float64) * 2 + 1e-3
    return phi, t


@torch.no_grad()
def assert_symmetries(model, lat, shifts):
    phi, t = fields(lat)
    s = model(phi, t)
    scale = float(s.abs().max())
    assert scale > 1e-3, "degenerate output: the symmetry check would be trivial"
    # Z2 oddness
    torch.testing.assert_close(model(-phi, t), -s, rtol=0, atol=1e-12 * scale)
    # translation equivariance
    dims = tuple(range(1, lat.d + 1))
    rolled = model(torch.roll(phi, shifts, dims), t)
    torch.testing.assert_close(rolled, torch.roll(s, shifts, dims), rtol=0, atol=1e-11 * scale)
    # the output is not trivially odd because it is linear: check a nonlinear response
    s2 = model(2 * phi, t)
    assert (s2 - 2 * s).abs().max() > 1e-6 * scale


@pytest.mark.parametrize("N", [8, 12, 16])
@pytest.mark.parametrize("name,params", MODEL_CASES)
def test_odd_and_translation_equivariant(name, params, N):
    lat = Lattice(N)
    model = randomize(build_model(name, lat, channels=4, **params) if name != "effective"
                      else build_model(name, lat, **params))
    assert_symmetries(model, lat, (1, 3))
    assert_symmetries(model, lat, (N // 2 + 1, -1))


@pytest.mark.parametrize("name,params", MODEL_CASES)
def test_gaussian_exact_wrapper_symmetries(name, params):
    lat = Lattice(12)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    G = lat.free_propagator(0.5)
    kw = {} if name == "effective" else {"channels": 4}
    model = build_model(name, lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        **kw, **params)
    assert isinstance(model, GaussianExactScore)
    randomize(model.net)
    assert_symmetries(model, lat, (5, 2))


def test_gaussian_exact_starts_at_the_exact_gaussian_score():
    lat = Lattice(8)
    scheme = build_scheme("carosso", lat, T=4.0, mu2=0.5)
    G = lat.free_propagator(1.0)
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True)
    phi, t = fields(lat)
    torch.testing.assert_close(model(phi, t), scheme.gaussian_score(phi, t, G), rtol=0, atol=0)
    # residual scale r_t = (mean_p S_t)^(-1/2)
    S = scheme.marginal_spectrum(t, G)
    torch.testing.assert_close(model.residual_scale(t), S.mean((1, 2)) ** -0.5)


@pytest.mark.parametrize("d,shape", [(1, (10,)), (3, (4, 6, 4))])
def test_conv_and_effective_other_dimensions(d, shape):
    lat = Lattice(shape)
    for model in (randomize(ConvScore(lat, channels=3, blocks=1)),
                  randomize(EffectiveActionScore(lat))):
        assert_symmetries(model, lat, (1,) * d)


def test_effective_closed_form_gradients_equal_autograd():
    lat = Lattice(6)
    phi, t = fields(lat, batch=4)
    phi.requires_grad_(True)
    vals = operator_values(phi, lat.d)
    grads = operator_gradients(phi.detach(), lat.d)
    for name in OPERATORS:
        (auto,) = torch.autograd.grad(vals[name].sum(), phi, retain_graph=True)
        torch.testing.assert_close(grads[name], auto, rtol=1e-12, atol=1e-12)
    model = randomize(EffectiveActionScore(lat), seed=3)
    (auto,) = torch.autograd.grad(model.action(phi, t).sum(), phi)
    torch.testing.assert_close(model(phi.detach(), t), -auto, rtol=1e-12, atol=1e-12)
    # couplings: one entry per operator, shape (B,); the action is sum c_i O_i
    c = model.couplings(t)
    assert list(c) == list(OPERATORS) and all(v.shape == (4,) for v in c.values())
    manual = sum(c[k] * vals[k] for k in OPERATORS)
    torch.testing.assert_close(model.action(phi, t), manual)


def test_effective_operator_values_match_standard_action():
    """c_grad2 = 1/2, c_phi2 = m2/2, c_phi4 = lam/4 reproduces Phi4Action."""
    from rgdist.lattice import Phi4Action
    lat = Lattice(6)
    phi, _ = fields(lat)
    v = operator_values(phi, 2)
    S = Phi4Action(m2=-0.7, lam=1.3)(phi)
    torch.testing.assert_close(0.5 * v["grad2"] - 0.35 * v["phi2"] + 1.3 / 4 * v["phi4"], S)


def test_untrained_models_return_zero_and_t_scalar_ok():
    lat = Lattice(8)
    phi, _ = fields(lat)
    for name in ("conv", "unet", "effective"):
        m = build_model(name, lat)
        out = m(phi, 0.5)
        assert out.shape == phi.shape and out.dtype == phi.dtype
        assert torch.count_nonzero(out) == 0


@torch.no_grad()
def test_float32_model_and_channels_last_agree():
    lat = Lattice(8)
    phi, t = fields(lat)
    m64 = randomize(build_model("conv", lat, channels=4))
    mcl = build_model("conv", lat, channels=4, channels_last=True)
    load_named_arrays(mcl, named_arrays(m64))
    torch.testing.assert_close(mcl(phi, t), m64(phi, t), rtol=1e-12, atol=1e-12)
    m32 = build_model("conv", lat, channels=4, dtype="float32")
    load_named_arrays(m32, named_arrays(m64))
    out = m32(phi, t)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, m64(phi, t), rtol=1e-4, atol=1e-4 * float(out.abs().max()))


def test_named_arrays_roundtrip_and_errors():
    lat = Lattice(8)
    scheme = build_scheme("carosso", lat)
    G = lat.free_propagator(1.0)
    src = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                      residual=True, residual_channels=4)
    randomize(src.net, seed=7)
    arrays = named_arrays(src)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert "data_spectrum" in arrays and any(k.startswith("net.residual.") for k in arrays)
    dst = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                      residual=True, residual_channels=4, init_seed=5)
    phi, t = fields(lat)
    assert not torch.equal(dst(phi, t), src(phi, t))
    load_named_arrays(dst, arrays)
    assert torch.equal(dst(phi, t), src(phi, t))
    bad = dict(arrays)
    bad.pop("data_spectrum")
    with pytest.raises(ValueError, match="missing"):
        load_named_arrays(dst, bad)
    bad = dict(arrays, extra=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected"):
        load_named_arrays(dst, bad)
    bad = dict(arrays, data_spectrum=np.ones((4, 4)))
    with pytest.raises(ValueError, match="shape"):
        load_named_arrays(dst, bad)


def test_initialization_from_an_explicit_generator():
    lat = Lattice(8)

    def arrays(**kw):
        return named_arrays(build_model("effective", lat, residual=True, residual_channels=4,
                                        **kw))

    a = arrays(generator=torch.Generator().manual_seed(3))
    b = arrays(generator=torch.Generator().manual_seed(3))
    c = arrays(generator=torch.Generator().manual_seed(4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="generator"):
        build_model("conv", lat, generator=3)


def test_compile_wrapper_keeps_named_arrays():
    lat = Lattice(8)
    plain = build_model("conv", lat, channels=4)
    compiled = build_model("conv", lat, channels=4, compile=True)
    a, b = named_arrays(plain), named_arrays(compiled)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_time_normalization_follows_scheme_T():
    lat = Lattice(8)
    for T in (1.0, 40.0):
        m = build_model("conv", lat, scheme=build_scheme("carosso", lat, T=T))
        assert m.embed.t_max == T
        feats = m.embed.features(torch.tensor([T, T * 1e-3], dtype=torch.float64))
        assert feats[0, 0] == 1.0 and feats[0, 1] == 1.0   # tau = 1, log-feature = 1
        assert 0 < feats[1, 1] < 1


def test_registry_errors():
    lat = Lattice(8)
    with pytest.raises(ValueError, match=r"conv.*effective.*unet"):
        build_model("mlp", lat)
    with pytest.raises(ValueError, match="unknown parameter.*allowed"):
        build_model("conv", lat, width=3)
    with pytest.raises(ValueError, match="channels"):
        build_model("conv", lat, channels=0)
    with pytest.raises(ValueError, match="dtype"):
        build_model("conv", lat, dtype="float16")
    with pytest.raises(ValueError, match="divisible by 2\\^levels"):
        build_model("unet", Lattice(12), levels=3)
    with pytest.raises(ValueError, match="gaussian_exact"):
        build_model("conv", lat, gaussian_exact=True)
    with pytest.raises(ValueError, match="operators"):
        build_model("effective", lat, operators=["phi2", "phi8"])
    with pytest.raises(ValueError, match="dimension d"):
        build_model("conv", Lattice((4, 4, 4, 4)))
    with pytest.raises(ValueError, match="t_max"):
        build_model("conv", lat, t_max=0.0)
    m = build_model("conv", lat)
    with pytest.raises(ValueError, match="shape"):
        m(torch.zeros(2, 6, 6, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="t must"):
        m(torch.zeros(2, 8, 8, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="data_spectrum must have shape"):
        build_model("conv", lat, scheme=build_scheme("carosso", lat),
                    data_spectrum=torch.ones(4, 4), gaussian_exact=True)


# ----------------------------------------------------------------------------- zero-mode head
def _head_pair(dtype=torch.float64):
    lat = Lattice(6)
    scheme = build_scheme("carosso", lat, T=4.0, mu2=0.3)
    G = lat.free_propagator(0.2)
    kw = dict(scheme=scheme, data_spectrum=G, gaussian_exact=True, residual=True,
              residual_channels=4, residual_blocks=1, dtype=dtype)
    plain = build_model("effective", lat, generator=torch.Generator().manual_seed(5), **kw)
    head = build_model("effective", lat, generator=torch.Generator().manual_seed(5),
                       zero_mode_head=True, **kw)
    return lat, scheme, G, plain, head


def test_zero_mode_head_starts_as_the_plain_model_and_adds_a_uniform_odd_field():
    """At initialization (last layer 0) the head changes nothing, bitwise. With random last
    layer weights, model(+head) - model = h(phi, t) at every site (uniform), h odd in phi and
    h = g(z)/(V sigma_M), sigma_M^2 = S_t(0)/V: the sum of two float64 fields of size |s| is
    exact to a few ulps of |s| (bound 8 eps max|s|)."""
    lat, scheme, G, plain, head = _head_pair()
    g = torch.Generator().manual_seed(1)
    phi = 0.4 * torch.randn((16, 6, 6), generator=g, dtype=torch.float64)
    t = torch.linspace(0.05, 3.9, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(plain(phi, t), head(phi, t))
        inner = head.net
        inner.fc2.weight.copy_(torch.randn(inner.fc2.weight.shape, generator=g, dtype=torch.float64))
        inner.fc2.bias.fill_(0.5)  # an even part in f must cancel in g(z) = f(z) - f(-z)
        s0, s1 = plain(phi, t), head(phi, t)
        h = inner.zero_mode_correction(phi, t)
        bound = 8 * torch.finfo(torch.float64).eps * float(torch.maximum(s0.abs(), s1.abs()).max())
        assert float(h.abs().min()) > 1e3 * bound
        assert float((s1 - s0 - h[:, None, None]).abs().max()) <= bound
        assert float((inner.zero_mode_correction(-phi, t) + h).abs().max()) == 0.0
        S0 = scheme.marginal_spectrum(t, G)[:, 0, 0]
        sigma = (S0 / lat.volume).sqrt()
        z = phi.mean((1, 2)) / sigma
        e = inner.embed(t)
        gz = inner._f(z, e) - inner._f(-z, e)
        torch.testing.assert_close(h, gz / (lat.volume * sigma), rtol=1e-14, atol=0)


def test_zero_mode_head_is_refused_where_it_has_no_units():
    lat = Lattice(4)
    scheme = build_scheme("carosso", lat, T=4.0, mu2=0.3)
    with pytest.raises(ValueError, match="gaussian_exact"):
        build_model("effective", lat, scheme=scheme, zero_mode_head=True)
    with pytest.raises(ValueError, match="zero_mode_head"):
        build_model("effective", lat, scheme=scheme, zero_mode_head="yes")
    from rgdist.density import has_exact_trace
    _, scheme6, _, _, head = _head_pair()
    assert not has_exact_trace(head, scheme6)


def test_zero_mode_head_units_are_the_magnetization_law_of_gaussian_data():
    """Free theory: for Gaussian data of spectrum G forward-noised to t, M_t = mean(phi_t) is
    N(0, S_t(0)/V) with S_t = A_t^2 G + Sigma_t, so the head's z = M_t/sigma_M has variance 1
    at every t (a wrong sigma_M, e.g. without the 1/V, fails by a factor V). Sample variance
    of n draws: standard error sqrt(2/n); checked within 4 of them."""
    lat, scheme, G, _, head = _head_pair()
    n = 8192
    phi0 = lat.colored_noise(G, n, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    for t in (0.05, 1.0, 3.5):
        tt = torch.full((n,), t, dtype=torch.float64)
        phi_t, _ = scheme.sample_forward(phi0, tt, g)
        sigma_M, _ = head.net._scales(tt)
        z = phi_t.mean((1, 2)) / sigma_M
        assert abs(float((z**2).mean()) - 1) < 4 * math.sqrt(2 / n), (t, float((z**2).mean()))
