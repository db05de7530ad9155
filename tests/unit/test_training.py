"""DSM loss, data sources and Trainer: exact free-theory checks, resume, EMA, NaN guard."""
import io
import math

import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import HMC
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import (
    Callback,
    CheckpointHook,
    EnsembleData,
    History,
    StopWhen,
    StreamingHMCData,
    TrainConfig,
    Trainer,
    dsm_loss,
    dsm_terms,
    measured_spectrum,
    sample_times,
)

torch.set_num_threads(1)


def free_data(lat, m2, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lat.colored_noise(lat.free_propagator(m2), n, g)


class ExactGaussian(torch.nn.Module):
    """The exact score of the Gaussian marginal (a 'perfect' model for Gaussian data)."""

    def __init__(self, scheme, G):
        super().__init__()
        self.scheme, self.G = scheme, G

    def forward(self, phi, t):
        return self.scheme.gaussian_score(phi, t, self.G)


def zero_model(phi, t):
    return torch.zeros_like(phi)


# ----------------------------------------------------------------------------- DSM loss
def test_dsm_loss_of_zero_model_is_one_per_site_with_sigma_weighting():
    """With s = 0 and lambda = Sigma the per-sample loss is (1/V) sum_x xi_x^2, xi white:
    mean 1, variance 2/V per configuration."""
    lat = Lattice(8)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    phi0 = free_data(lat, 1.0, 2048)
    g = torch.Generator().manual_seed(1)
    loss = float(dsm_loss(zero_model, scheme, phi0, g, weighting="sigma", t_sampler="log"))
    sigma = math.sqrt(2 / lat.volume / phi0.shape[0])
    assert abs(loss - 1) < 4 * sigma


@pytest.mark.parametrize("weighting", ["sigma", "likelihood", "none"])
def test_dsm_loss_of_exact_score_matches_the_analytic_floor(weighting):
    """For Gaussian data (spectrum G) and the exact score s~ = -phi~_t / S_t, S = A^2 G + Sigma:
        E |s~ - target~|^2 = V (1/Sigma - 1/S)   per mode (E phi~_t eps~* = V Sigma), so
        E loss(t) = (1/V) sum_p lambda(p) (1/Sigma(p) - 1/S(p)).
    Checked at fixed t against the sample mean within 4 standard errors."""
    lat = Lattice(8)
    scheme = build_scheme("polchinski", lat) if weighting == "likelihood" else \
        build_scheme("carosso", lat, T=40.0, mu2=0.1)
    m2 = 1.0
    G = lat.free_propagator(m2)
    model = ExactGaussian(scheme, G)
    phi0 = free_data(lat, m2, 4096)
    g = torch.Generator().manual_seed(2)
    for t in (0.05, 1.0):
        tt = torch.full((phi0.shape[0],), t, dtype=torch.float64)
        terms = dsm_terms(model, scheme, phi0, tt, g, weighting=weighting)
        Sigma, S = scheme.Sigma(t), scheme.marginal_spectrum(t, G)
        lam = {"sigma": Sigma, "likelihood": scheme.beta2(t), "none": torch.ones_like(S)}[weighting]
        noised = Sigma > 0
        exact = float((lam * (1 / Sigma - 1 / S))[noised].sum() / lat.volume)
        err = float(terms.std() / math.sqrt(len(terms)))
        assert abs(float(terms.mean()) - exact) < 4 * err, (t, float(terms.mean()), exact, err)


def test_dsm_target_is_the_schemes_conditional_score():
    lat = Lattice(6)
    scheme = build_scheme("carosso", lat, T=4.0, mu2=0.3)
    phi0 = free_data(lat, 0.5, 16)
    t = torch.linspace(0.01, 3.0, 16, dtype=torch.float64)
    terms = dsm_terms(zero_model, scheme, phi0, t, torch.Generator().manual_seed(3),
                      weighting="none")
    phi_t, _ = scheme.sample_forward(phi0, t, torch.Generator().manual_seed(3))
    target = scheme.conditional_score(phi_t, phi0, t)
    torch.testing.assert_close(terms, (target**2).mean((1, 2)), rtol=1e-10, atol=0)


def test_zero_mode_weight_adds_only_the_zero_mode_term():
    """zero_mode_weight b: terms(b) = terms(1) + (b - 1) Sigma(0) |r~(0)|^2 / V^2, with r~ the
    DSM residual of the zero mode. Same generator seed, so phi_t, eps and every per-mode value
    are bitwise the same in both calls; only the two sums of V >= 0 terms round differently:
    rtol 2 V eps."""
    lat = Lattice(6)
    V = lat.volume
    scheme = build_scheme("carosso", lat, T=4.0, mu2=0.3)
    G = lat.free_propagator(0.5)
    model = ExactGaussian(scheme, 1.3 * G)  # a wrong spectrum: non-zero residual in every mode
    phi0 = free_data(lat, 0.5, 32)
    t = torch.linspace(0.01, 3.0, 32, dtype=torch.float64)
    one = dsm_terms(model, scheme, phi0, t, torch.Generator().manual_seed(3))
    same = dsm_terms(model, scheme, phi0, t, torch.Generator().manual_seed(3), zero_mode_weight=1.0)
    assert torch.equal(one, same)
    b = 5.0
    boosted = dsm_terms(model, scheme, phi0, t, torch.Generator().manual_seed(3), zero_mode_weight=b)
    phi_t, eps = scheme.sample_forward(phi0, t, torch.Generator().manual_seed(3))
    Sigma0 = scheme.Sigma(t)[:, 0, 0]
    r0 = lat.fft(model(phi_t, t))[:, 0, 0] + lat.fft(eps)[:, 0, 0] / Sigma0
    zero_term = Sigma0 * r0.abs() ** 2 / V**2
    assert bool((zero_term > 0).all())
    eps64 = torch.finfo(torch.float64).eps
    torch.testing.assert_close(boosted, one + (b - 1) * zero_term, rtol=2 * V * eps64, atol=0)
    for bad_b in (0.0, -1.0, math.inf, math.nan, True, "high"):
        with pytest.raises(ValueError, match="zero_mode_weight"):
            dsm_terms(model, scheme, phi0, t, torch.Generator(), zero_mode_weight=bad_b)
        with pytest.raises(ValueError, match="zero_mode_weight"):
            TrainConfig(zero_mode_weight=bad_b)


def test_time_samplers():
    g = torch.Generator().manual_seed(4)
    T, t_min, n = 40.0, 0.01, 200_000
    for kind in ("uniform", "log", "log_is"):
        t, w = sample_times(kind, n, T, t_min, g)
        assert t.shape == w.shape == (n,) and float(t.min()) >= t_min and float(t.max()) <= T
    # importance weights turn log-uniform draws into the uniform-in-t objective:
    # E_q[w] = 1 and E_q[w t] = (T + t_min)/2
    t, w = sample_times("log_is", n, T, t_min, g)
    for f, exact in ((w, 1.0), (w * t, (T + t_min) / 2)):
        assert abs(float(f.mean()) - exact) < 4 * float(f.std()) / math.sqrt(n)
    with pytest.raises(ValueError, match="t_sampler"):
        sample_times("cosine", 4, T, t_min, g)


def test_dsm_bad_input():
    lat = Lattice(4)
    scheme = build_scheme("carosso", lat, T=1.0)
    phi0 = free_data(lat, 1.0, 4)
    g = torch.Generator()
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(zero_model, scheme, phi0, g, weighting="snr")
    with pytest.raises(ValueError, match="t_min"):
        dsm_loss(zero_model, scheme, phi0, g, t_min=2.0)
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(zero_model, scheme, phi0[:, :2], g)


# ----------------------------------------------------------------------------- data
def test_measured_spectrum_matches_free_propagator():
    """|phi~(p)|^2/V is exponential (mean G, sd G) on complex modes and G chi^2_1 (sd sqrt2 G)
    on the 4 self-conjugate modes; the mean of n draws has sd G sqrt(c/n)."""
    lat = Lattice(8)
    n, m2 = 4000, 0.5
    G = lat.free_propagator(m2)
    est = measured_spectrum(free_data(lat, m2, n, seed=9), lat)
    c = torch.ones_like(G)
    c[::4, ::4] = 2.0
    z = (est - G) / (G * torch.sqrt(c / n))
    assert float(z.abs().max()) < 4.5


def test_ensemble_data_augmentation():
    configs = torch.ones(5, 4, 4, dtype=torch.float64) * torch.arange(1, 6.0)[:, None, None]
    g = torch.Generator().manual_seed(0)
    plain = EnsembleData(configs, augment=False).sample(1000, g)
    assert bool((plain > 0).all())
    flipped = EnsembleData(configs).sample(1000, g)
    neg = float((flipped[:, 0, 0] < 0).double().mean())
    assert abs(neg - 0.5) < 4 * 0.5 / math.sqrt(1000)
    assert set(flipped[:, 0, 0].abs().unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    with pytest.raises(ValueError, match="configs"):
        EnsembleData(torch.zeros(0, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        EnsembleData(torch.full((2, 4, 4), math.nan))


def make_hmc(lat, seed):
    return HMC(Phi4Action(m2=1.0, lam=0.5), lat, 4, step_size=0.2, n_steps=4,
               generator=torch.Generator().manual_seed(seed))


def test_streaming_hmc_data_refreshes_and_resumes():
    lat = Lattice(4)
    src = StreamingHMCData(make_hmc(lat, 0), thin=2, buffer=8)
    assert src.hmc.n_traj == 4                     # two refills of 4 chains, 2 trajectories each
    before = src.buffer.clone()
    g = torch.Generator().manual_seed(1)
    src.sample(3, g)
    assert torch.equal(src.buffer, before)         # 1 trajectory: not yet thinned in
    src.sample(3, g)
    assert not torch.equal(src.buffer, before)     # 2nd trajectory pushes 4 fresh fields
    state = src.state_dict()
    other = StreamingHMCData(make_hmc(lat, 99), thin=2, buffer=8)   # other chains, other RNG
    other.load_state_dict(state)
    g_a, g_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):
        assert torch.equal(src.sample(5, g_a), other.sample(5, g_b))
    assert src.hmc.n_traj == other.hmc.n_traj == 9
    with pytest.raises(ValueError, match="thin"):
        StreamingHMCData(make_hmc(lat, 0), thin=0, buffer=8)


# ----------------------------------------------------------------------------- trainer
def small_setup(steps=10, seed=11, init_seed=0, data=None, dtype="float64", **cfg):
    lat = Lattice(6)
    scheme = build_scheme("carosso", lat, T=10.0, mu2=0.2)
    configs = free_data(lat, 1.0, 64)
    G = measured_spectrum(configs, lat)
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=4, blocks=1, init_seed=init_seed, dtype=dtype)
    kw = dict(steps=steps, batch_size=8, lr=1e-2, warmup=3, ema_decay=0.9, log_every=0,
              t_sampler="log")
    kw.update(cfg)
    data = EnsembleData(configs) if data is None else data
    return Trainer(model, scheme, data, TrainConfig(**kw), torch.Generator().manual_seed(seed))


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


def test_resume_is_bit_for_bit():
    full = small_setup()
    full.fit()
    part = small_setup()
    assert part.fit(until=5) == "done" and part.step == 5
    buf = io.BytesIO()
    np.savez(buf, **part.state_dict())             # plain arrays: no pickle needed
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        state = dict(f)
    fresh = small_setup(seed=999, init_seed=7)     # different generator and initial weights
    fresh.load_state_dict(state)
    fresh.fit()
    assert fresh.step == full.step == 10
    assert_states_equal(fresh.state_dict(), full.state_dict())
    assert any(k.startswith("optim/") and k.endswith("exp_avg_sq") for k in state)


def test_resume_with_streaming_hmc_is_bit_for_bit():
    lat = Lattice(6)

    def setup(seed):
        return small_setup(steps=6, data=StreamingHMCData(make_hmc(lat, seed), thin=2, buffer=8))

    full = setup(0)
    full.fit()
    part = setup(0)
    part.fit(until=3)
    fresh = setup(42)
    fresh.load_state_dict(part.state_dict())
    fresh.fit()
    assert_states_equal(fresh.state_dict(), full.state_dict())


class Recorder(Callback):
    def __init__(self):
        self.params = {}

    def on_step_end(self, trainer, step, loss):
        self.params[step] = [p.detach().clone() for p in trainer.params]


def test_ema_follows_the_stated_recursion():
    rec = Recorder()
    tr = small_setup(steps=6, ema_decay=0.8)
    tr.callbacks.append(rec)
    initial = [p.detach().clone() for p in tr.params]
    tr.fit()
    ema = initial
    for k in range(6):
        d = min(0.8, (1 + k) / (10 + k))
        ema = [e * d + p * (1 - d) for e, p in zip(ema, rec.params[k + 1])]
    for e, ref in zip(tr.ema, ema):
        torch.testing.assert_close(e, ref, rtol=1e-13, atol=1e-15)
    em = tr.ema_model()
    for name, e in zip(tr.names, tr.ema):
        assert torch.equal(dict(em.named_parameters())[name], e)


class NaNData(EnsembleData):
    """Returns NaN configurations on the calls listed in ``bad`` (1-based)."""

    def __init__(self, configs, bad):
        super().__init__(configs)
        self.bad, self.calls = set(bad), 0

    def sample(self, batch, generator):
        self.calls += 1
        out = super().sample(batch, generator)
        return out * math.nan if self.calls in self.bad or "all" in self.bad else out


def test_nan_guard_rolls_back_and_halves_lr():
    lat = Lattice(6)
    data = NaNData(free_data(lat, 1.0, 64), bad={3})
    tr = small_setup(steps=6, data=data, lr_schedule="constant", warmup=0)
    tr.fit()
    assert tr.step == 6 and len(tr.loss_history) == 6 and tr.n_rollbacks == 1
    assert tr.lr_factor == 0.5 and tr.lr_at(6) == 0.5 * 1e-2
    assert data.calls == 8          # steps 0,1 ok; NaN at step 2 -> back to after step 0
    assert all(bool(torch.isfinite(p).all()) for p in tr.params)
    assert np.isfinite(tr.state_dict()["loss_history"]).all()


def test_nan_guard_undoes_corrupted_parameters():
    rec = Recorder()

    class Corrupt(Callback):
        def on_step_end(self, trainer, step, loss):
            if step == 3 and trainer.n_rollbacks == 0:
                with torch.no_grad():
                    trainer.params[0].fill_(math.nan)

    class Check(Callback):
        seen = []

        def on_rollback(self, trainer, step, reason):
            self.seen.append((step, trainer.step, reason))
            for p, ref in zip(trainer.params, rec.params[2]):
                assert torch.equal(p, ref)

    tr = small_setup(steps=6)
    tr.callbacks += [rec, Corrupt(), Check()]
    tr.fit()
    assert Check.seen == [(3, 2, "non-finite loss")]
    assert tr.step == 6 and tr.lr_factor == 0.5
    assert all(bool(torch.isfinite(p).all()) for p in tr.params)


def test_nan_policy_raise_and_rollback_limit():
    lat = Lattice(6)
    configs = free_data(lat, 1.0, 64)
    tr = small_setup(steps=4, data=NaNData(configs, bad={2}), nan_policy="raise")
    with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
        tr.fit()
    tr = small_setup(steps=4, data=NaNData(configs, bad={"all"}), max_rollbacks=3)
    with pytest.raises(FloatingPointError, match="max_rollbacks"):
        tr.fit()


def test_callbacks_checkpoint_stop_and_time_budget():
    saved, hist = [], History()
    hook = CheckpointHook(lambda state, step: saved.append((step, int(state["step"]))))
    tr = small_setup(steps=7, checkpoint_every=3, log_every=2)
    tr.callbacks += [hook, hist]
    assert tr.fit() == "done"
    assert saved == [(3, 3), (6, 6), (7, 7)]
    assert [s for s, _ in hist.records] == [2, 4, 6]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for _, r in hist.records)
    tr = small_setup(steps=7)
    tr.callbacks.append(StopWhen(lambda: tr.step >= 2))
    assert tr.fit() == "stopped" and tr.step == 2
    tr = small_setup(steps=1000, max_seconds=1e-6)
    assert tr.fit() == "time" and tr.step < 1000 and tr.out_of_time()
    assert not small_setup(steps=3).out_of_time()


def test_lr_schedule_and_amp_step():
    tr = small_setup(steps=10, warmup=2, lr=1.0)
    assert tr.lr_at(0) == 0.5 and tr.lr_at(1) == 1.0
    assert tr.lr_at(2) == pytest.approx(1.0) and tr.lr_at(10) == pytest.approx(0.0)
    assert tr.lr_at(6) == pytest.approx(0.5)
    runs = {}
    for amp in ("off", "bf16"):
        tr = small_setup(steps=2, amp=amp, dtype="float32")
        tr.fit()
        runs[amp] = tr.loss_history
    # bf16 autocast is active (different rounding) yet close to the float32 run
    assert runs["off"] != runs["bf16"] and all(math.isfinite(x) for x in runs["bf16"])
    np.testing.assert_allclose(runs["bf16"], runs["off"], rtol=0.05)
    with pytest.raises(ValueError, match="float32 model"):
        small_setup(steps=2, amp="bf16")


def test_train_config_validation():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="weighting"):
        TrainConfig(weighting="snr")
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp16")
    with pytest.raises(ValueError, match="nan_policy"):
        TrainConfig(nan_policy="ignore")
    with pytest.raises(ValueError, match=r"unknown train option.*allowed"):
        TrainConfig.from_dict({"steps": 3, "epochs": 2})
    assert TrainConfig.from_dict({"steps": 3}).steps == 3
    lat = Lattice(4)
    scheme = build_scheme("carosso", lat, T=1.0)
    model = build_model("conv", lat, channels=2, blocks=1)
    data = EnsembleData(free_data(lat, 1.0, 4))
    with pytest.raises(ValueError, match="generator"):
        Trainer(model, scheme, data, TrainConfig(), generator=None)
    with pytest.raises(ValueError, match="config"):
        Trainer(model, scheme, data, {"steps": 3}, torch.Generator())


# ----------------------------------------------------------------------------- learning
def test_conv_score_learns_the_free_theory_score():
    """Free theory (lam = 0, m2 = 1), N = 8, Carosso scheme (T = 40, mu2 = 0.1), data = exact
    free-field samples. A plain ConvScore (no Gaussian part given) must learn the exact
    Gaussian score -ifft(fft(phi)/(A^2 G + Sigma)); relative L2 error averaged over a
    log-spaced grid of 11 times in [t_min, T] = [0.01, 40] below 5%."""
    lat = Lattice(8)
    m2 = 1.0
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    G = lat.free_propagator(m2)
    data = EnsembleData(free_data(lat, m2, 4096))
    model = build_model("conv", lat, scheme=scheme, channels=8, blocks=2, dtype="float32")
    cfg = TrainConfig(steps=400, batch_size=64, lr=1e-2, warmup=20, ema_decay=0.99,
                      t_sampler="log", t_min=0.01, log_every=0)
    tr = Trainer(model, scheme, data, cfg, torch.Generator().manual_seed(1))
    tr.fit()
    ema = tr.ema_model()
    g = torch.Generator().manual_seed(5)
    errors = []
    with torch.no_grad():
        for t in scheme.time_grid(10, "log", 0.01).tolist():
            phi = lat.colored_noise(scheme.marginal_spectrum(t, G), 256, g)
            exact = scheme.gaussian_score(phi, t, G)
            errors.append(float(((ema(phi, t) - exact).norm() / exact.norm())))
    assert np.mean(errors) < 0.05, errors
    assert max(errors) < 0.15, errors


def test_effective_couplings_match_the_exact_quadratic_projection():
    """Effective-action model alone (no remainder) on the free theory.

    The model's score is linear + odd polynomial: s~(p) = -k(p) phi~(p) - (4 c4 phi^3 +
    6 c6 phi^5)~, k(p) = 2 c_phi2 + 2 c_grad2 phat^2. For fixed t the DSM loss is
    E_phi0,eps (1/V^2) sum_p lambda |s~ - target~|^2 = E (1/V^2) sum_p lambda |s~ - s~*|^2 + const
    (the denoising identity; s* = the true score = -phi~/S_t, S_t = A_t^2 G + Sigma_t).
    (i) c4 = c6 = 0 at the optimum: for Gaussian phi and any r linear in phi, Wick gives
        E[phi_x^3 r_y] = 3 <phi^2> E[phi_x r_y] (and 15 <phi^2>^2 for phi^5), so the gradient
        along phi^3, phi^5 is proportional to the one along phi, which vanishes at the
        quadratic optimum.
    (ii) with E|phi~(p)|^2 = V S_t(p) the quadratic part minimizes
        sum_p w(p) (k(p) - 1/S_t(p))^2,   w(p) = lambda_t(p) S_t(p)   (lambda = Sigma_t here),
        a weighted least-squares fit of 1/S_t by the basis {2, 2 phat^2}: the normal equations
        sum_p w b_i b_j c_j = sum_p w b_i / S_t give the exact (c_phi2, c_grad2).
    Training on t in [0.02, 40] (log-uniform); checked at interior times t in [0.1, 40] within
    10%; the learned non-quadratic part (4 c4 phi^3 + 6 c6 phi^5) must be < 5% of the score.
    """
    lat = Lattice(8)
    m2 = 1.0
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    G = lat.free_propagator(m2)
    data = EnsembleData(free_data(lat, m2, 4096))
    model = build_model("effective", lat, scheme=scheme)
    cfg = TrainConfig(steps=1500, batch_size=128, lr=1e-2, warmup=20, ema_decay=0.99,
                      t_sampler="log", t_min=0.02, weighting="sigma", log_every=0)
    tr = Trainer(model, scheme, data, cfg, torch.Generator().manual_seed(1))
    tr.fit()
    ema = tr.ema_model()
    ts = torch.tensor([0.1, 0.3, 1.0, 3.0, 10.0, 40.0], dtype=torch.float64)
    with torch.no_grad():
        c = ema.couplings(ts)
    p2 = lat.phat2().reshape(-1)
    basis = torch.stack([2 * torch.ones_like(p2), 2 * p2], 1)
    g = torch.Generator().manual_seed(3)
    for i, t in enumerate(ts.tolist()):
        S = scheme.marginal_spectrum(t, G).reshape(-1)
        w = scheme.Sigma(t).reshape(-1) * S
        normal = basis.T @ (w[:, None] * basis)
        exact = torch.linalg.solve(normal, basis.T @ (w / S))
        learned = torch.stack([c["phi2"][i], c["grad2"][i]])
        rel = ((learned - exact).abs() / exact.abs()).max()
        assert float(rel) < 0.10, (t, learned.tolist(), exact.tolist())
        phi = lat.colored_noise(scheme.marginal_spectrum(t, G), 256, g)
        with torch.no_grad():
            s = ema(phi, t)
        nonquad = 4 * c["phi4"][i] * phi**3 + 6 * c["phi6"][i] * phi**5
        assert float(nonquad.norm() / s.norm()) < 0.05, (t, c["phi4"][i], c["phi6"][i])


@pytest.mark.slow
def test_unet_learns_the_free_theory_score_on_16x16():
    """Slow (~45 s): the multiscale U-Net (levels = 2) learns the exact free score (m2 = 0.5,
    N = 16, Carosso T = 40, mu2 = 0.1); relative L2 error averaged over 11 log-spaced t in
    [0.01, 40] below 5%."""
    lat = Lattice(16)
    m2 = 0.5
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    G = lat.free_propagator(m2)
    data = EnsembleData(free_data(lat, m2, 4096))
    model = build_model("unet", lat, scheme=scheme, channels=8, levels=2, dtype="float32")
    cfg = TrainConfig(steps=400, batch_size=32, lr=1e-2, warmup=20, ema_decay=0.99,
                      t_sampler="log", t_min=0.01, log_every=0)
    tr = Trainer(model, scheme, data, cfg, torch.Generator().manual_seed(1))
    tr.fit()
    ema = tr.ema_model()
    g = torch.Generator().manual_seed(5)
    errors = []
    with torch.no_grad():
        for t in scheme.time_grid(10, "log", 0.01).tolist():
            phi = lat.colored_noise(scheme.marginal_spectrum(t, G), 128, g)
            exact = scheme.gaussian_score(phi, t, G)
            errors.append(float(((ema(phi, t) - exact).norm() / exact.norm())))
    assert np.mean(errors) < 0.05, errors
