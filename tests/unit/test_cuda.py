"""CUDA against CPU: score models, training, samplers (marker ``cuda``; skipped without CUDA).

Run on a GPU machine with ``pytest -m cuda tests/unit`` (``benchmarks/gpu_check.sh`` does).

Tolerances come from float64 rounding, measured on the CPU: each comparison first runs the CPU
computation a second time with its inputs (and, for models, its parameters) multiplied by
``1 + eps * xi`` (xi standard normal, eps = float64 machine epsilon), and takes the relative
change ``S * eps`` of the result as the rounding sensitivity of that computation (its
condition number at ulp-level perturbations). A device computes the same arithmetic in
another order (cuDNN convolutions, cuFFT, other reduction trees), i.e. injects ulp-level
perturbations at every operation, so the CPU-CUDA difference must stay within
``SAFETY * S * eps`` relative to the max-norm of the CPU result; the factor covers the number
of operations (per layer for a network, per solver step for a sampler). Float32 rounding
(eps32 / eps64 = 2^29) is far outside every such tolerance, so a silent downcast on the device
would fail these tests.
"""
import copy
import os

import pytest
import torch

# cuBLAS is deterministic under torch.use_deterministic_algorithms(True) only with a fixed
# workspace configuration, read when the first cuBLAS handle is made (before any CUDA work).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from rgdist.lattice import Lattice  # noqa: E402
from rgdist.models import build_model  # noqa: E402
from rgdist.rg import build_scheme  # noqa: E402
from rgdist.sample import sample_ensemble, solve  # noqa: E402
from rgdist.train import EnsembleData, TrainConfig, Trainer  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs CUDA (torch.cuda.is_available() is False)"),
]

EPS = torch.finfo(torch.float64).eps
M2 = 0.5

MODELS = {
    "conv": dict(channels=8, blocks=2),
    "unet": dict(channels=8, levels=2),
    "effective": dict(residual=True, residual_channels=4, residual_blocks=1),
}

SCHEMES = {  # (parameters, grid kind); Polchinski with T = 0.75 keeps the prior's dynamic
    # range (max/min spectrum ~1e5) moderate, so its ODE is well conditioned
    "carosso": (dict(T=20.0, mu2=0.1), "log"),
    "polchinski": (dict(T=0.75, Lambda0=2.0, m02=1.0, mu2=0.5), "uniform"),
    "renormalized_polchinski": (dict(T=1.5, Lambda0=2.0, m02=1.0, mu2=0.5), "uniform"),
    "vp": (dict(T=1.0, beta_min=0.1, beta_max=20.0), "uniform"),
    "ve": (dict(T=1.0, sigma_min=0.01, sigma_max=30.0), "uniform"),
}


@pytest.fixture(autouse=True)
def _restore_global_torch_flags():
    """Deterministic mode and TF32 are process-global: put them back after every test."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.get_num_threads())
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cuda.matmul.allow_tf32 = saved[1]
    torch.backends.cudnn.allow_tf32 = saved[2]
    torch.backends.cudnn.benchmark = saved[3]
    torch.set_num_threads(saved[4])


def rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| (both moved to the CPU, float64)."""
    a, ref = a.detach().cpu().double(), ref.detach().cpu().double()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(torch.finfo(torch.float64).tiny))


def ulp_perturbed(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x * (1 + EPS * torch.randn(x.shape, generator=g, dtype=x.dtype))


# ------------------------------------------------------------------ score models
def random_model(name: str, lat: Lattice, scheme, G):
    """A float64 GaussianExact model with every parameter drawn at random (an untrained
    model's output layer is zero, which would hide the network from the comparison)."""
    model = build_model(name, lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        dtype="float64", **MODELS[name])
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def forward_backward(model, phi, t):
    """(score, d loss / d phi, [d loss / d param]) for loss = sum(score^2)."""
    model.zero_grad(set_to_none=True)
    x = phi.clone().requires_grad_(True)
    out = model(x, t)
    (out ** 2).sum().backward()
    return [out.detach(), x.grad.detach()] + [p.grad.detach() for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_model_forward_and_backward_on_cuda_equal_cpu(name):
    lat = Lattice(8)
    scheme = build_scheme("carosso", lat, T=20.0, mu2=0.1)
    G = lat.free_propagator(M2)
    model = random_model(name, lat, scheme, G)
    g = torch.Generator().manual_seed(6)
    phi = lat.colored_noise(G, 16, g)
    t = 0.01 + 10 * torch.rand(16, generator=g, dtype=torch.float64)
    ref = forward_backward(model, phi, t)

    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.copy_(ulp_perturbed(p, g))
    alt = forward_backward(perturbed, ulp_perturbed(phi, g), t)
    sensitivity = max(max(rel_diff(a, r) for a, r in zip(alt, ref)) / EPS, 1.0)
    tol = 200 * sensitivity * EPS

    on_gpu = copy.deepcopy(model).to("cuda")
    got = forward_backward(on_gpu, phi.cuda(), t.cuda())
    assert got[0].device.type == "cuda" and got[0].dtype == torch.float64
    labels = ["score", "grad_phi"] + [n for n, _ in model.named_parameters()]
    worst = {lab: rel_diff(a, r) for lab, a, r in zip(labels, got, ref)}
    bad = {k: v for k, v in worst.items() if not v <= tol}
    assert not bad, f"CUDA differs from CPU beyond {tol:.3g} (sensitivity {sensitivity:.1f} eps): {bad}"


# ------------------------------------------------------------------ training
def cuda_trainer(amp="off", tf32=False, steps=25, seed=2):
    lat = Lattice(8)
    scheme = build_scheme("carosso", lat, T=20.0, mu2=0.1)
    G = lat.free_propagator(M2)
    data = lat.colored_noise(G, 512, torch.Generator().manual_seed(0)).float().cuda()
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=8, blocks=2, dtype="float32").cuda()
    cfg = TrainConfig(steps=steps, batch_size=64, lr=2e-3, warmup=5, log_every=0,
                      amp=amp, tf32=tf32)
    return Trainer(model, scheme, EnsembleData(data), cfg,
                   torch.Generator(device="cuda").manual_seed(seed))


def test_training_on_cuda_is_deterministic():
    """Two identical runs under torch.use_deterministic_algorithms(True) agree bit for bit:
    loss history, parameters, EMA and the Adam state."""
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    runs = []
    for _ in range(2):
        tr = cuda_trainer()
        assert tr.fit() == "done"
        runs.append(tr)
    a, b = runs
    assert a.step == b.step == 25
    assert a.loss_history == b.loss_history
    assert bool(torch.isfinite(torch.tensor(a.loss_history)).all())
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    different = [k for k in sa if not (sa[k].shape == sb[k].shape and (sa[k] == sb[k]).all())]
    assert not different, f"entries that differ between two identical CUDA runs: {different}"
    # the model really trained, on the GPU
    assert all(p.device.type == "cuda" for p in a.model.parameters())
    untrained = cuda_trainer().model.parameters()
    assert any(not torch.equal(p.detach(), q.detach()) for p, q in zip(a.model.parameters(), untrained))


@pytest.mark.parametrize("amp,tf32", [("bf16", False), ("off", True), ("bf16", True)])
def test_reduced_precision_training_on_cuda_tracks_float32(amp, tf32):
    """bf16 autocast / TF32 change only the rounding: the same random stream gives a first
    loss within 1% of full float32 (untrained GaussianExact: the network adds exactly zero,
    so it differs only through the Gaussian part), and 25 steps stay finite and close."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = cuda_trainer()
    ref.fit()
    low = cuda_trainer(amp=amp, tf32=tf32)
    low.fit()
    if tf32:
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    la, lb = torch.tensor(ref.loss_history), torch.tensor(low.loss_history)
    assert bool(torch.isfinite(lb).all()) and low.n_rollbacks == 0
    assert abs(float(lb[0] / la[0]) - 1) < 1e-2
    # the mean loss over the run: minibatches are the same, only rounding differs
    assert abs(float(lb.mean() / la.mean()) - 1) < 0.05


# ------------------------------------------------------------------ samplers
@pytest.mark.parametrize("scheme_name", sorted(SCHEMES))
def test_probability_flow_on_cuda_equals_cpu(scheme_name):
    """solve(..., 'heun_ode') with the exact Gaussian score is deterministic given phi_T:
    the same prior draws give the same ensemble on both devices, to rounding."""
    params, grid = SCHEMES[scheme_name]
    lat = Lattice(8)
    sch = build_scheme(scheme_name, lat, **params)
    G = lat.free_propagator(M2)
    g = torch.Generator().manual_seed(1)
    phi_T = sch.sample_prior(32, g, G=G)
    times = sch.time_grid(20, kind=grid)
    n_steps = len(times) - 1

    def run(phi, device):
        Gd = G.to(device)
        out, rec = solve(lambda x, t: sch.gaussian_score(x, t, Gd), sch, phi.to(device),
                         times, solver="heun_ode", G=Gd, record_times=[float(times[n_steps // 2])])
        return out, next(iter(rec.values()))

    ref, ref_mid = run(phi_T, "cpu")
    alt, _ = run(ulp_perturbed(phi_T, g), "cpu")
    sensitivity = max(rel_diff(alt, ref) / EPS, 1.0)
    tol = 50 * (n_steps + 1) * sensitivity * EPS
    got, got_mid = run(phi_T, "cuda")
    assert got.device.type == "cuda" and got.dtype == torch.float64
    assert rel_diff(got, ref) <= tol, (rel_diff(got, ref), tol)
    assert rel_diff(got_mid, ref_mid) <= tol


def mode_spectrum(samples: torch.Tensor, lat: Lattice):
    """(S(p), sigma(S)(p)): <|phi~(p)|^2>/V and its standard error."""
    P = lat.fft(samples.double().cpu()).abs().square() / lat.volume
    return P.mean(0), P.std(0) / P.shape[0] ** 0.5


def test_exponential_sampler_on_cuda_matches_cpu_statistically():
    """The exponential integrator with the exact Gaussian score and reference spectrum G is
    exact at every step, so on either device the sampled spectrum is the exact marginal
    A^2 G + Sigma at t_min (no denoising); CUDA draws other random numbers than the CPU, so
    the two ensembles agree within their statistical errors (not to rounding)."""
    lat = Lattice(8)
    sch = build_scheme("carosso", lat, T=20.0, mu2=0.1)
    G = lat.free_propagator(M2)
    n = 4096
    spectra = {}
    for device in ("cpu", "cuda"):
        Gd = G.to(device)
        res = sample_ensemble(lambda x, t: sch.gaussian_score(x, t, Gd), sch, n, n_steps=20,
                              solver="exponential", grid="log", batch_size=1024,
                              seed_streams=(3, "cuda-test"), prior_G=Gd, device=device,
                              denoise=False)
        assert res.samples.device.type == device and res.samples.shape == (n, 8, 8)
        assert bool(torch.isfinite(res.samples).all())
        spectra[device] = mode_spectrum(res.samples, lat)
    t_end = float(sch.time_grid(20, kind="log")[-1])
    exact = sch.marginal_spectrum(t_end, G)
    for device, (S, err) in spectra.items():
        z = (S - exact) / err
        assert float(z.abs().max()) < 5, (device, float(z.abs().max()))
    (Sa, ea), (Sb, eb) = spectra["cpu"], spectra["cuda"]
    z = (Sb - Sa) / (ea.square() + eb.square()).sqrt()
    assert float(z.abs().max()) < 5
