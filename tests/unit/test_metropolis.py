"""LocalMetropolis: valid colourings (odd N too), exact local action differences, free-theory
propagator on even and odd lattices, bitwise checkpoint/resume, input validation."""
import math

import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.metropolis import LocalMetropolis, site_colours

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape,n_colours", [
    ((8, 8), 2), ((6, 4), 2), ((2, 2, 4), 2), ((5, 7), 3), ((3, 4, 5), 3), ((2, 3), 3),
    ((7,), 3), ((3, 3), 3), ((9, 2), 3),
])
def test_colouring_is_proper(shape, n_colours):
    lat = Lattice(shape)
    colour, k = site_colours(lat)
    assert k == n_colours and colour.shape == lat.shape
    assert set(colour.unique().tolist()) == set(range(k))
    for ax in range(lat.d):
        assert not torch.any(colour == torch.roll(colour, 1, ax)), f"neighbours share a colour (axis {ax})"


@pytest.mark.parametrize("shape", [(6, 8), (5, 3), (3, 4, 5)])
def test_local_action_difference_is_exact(shape):
    lat = Lattice(shape)
    action = Phi4Action(-1.3, 0.7, d=lat.d)
    met = LocalMetropolis(action, lat, 2, generator=gen(1))
    phi = met.phi
    nsum = met._neighbour_sum(phi)
    g = np.random.default_rng(0)
    for _ in range(10):
        b = int(g.integers(2))
        x = tuple(int(g.integers(n)) for n in shape)
        new = phi.clone()
        new[(b, *x)] += float(g.normal())
        exact = (action(new) - action(phi))[b]
        local = met._local(new, nsum) - met._local(phi, nsum)
        assert local[(b, *x)].item() == pytest.approx(exact.item(), rel=1e-10, abs=1e-10)


def _unique_momentum_mask(lat):
    idx = np.arange(lat.volume).reshape(lat.shape)
    neg = idx[np.ix_(*[(-np.arange(n)) % n for n in lat.shape])]
    return idx <= neg


def _chi2(g_chains, g_exact, mask):
    mean = g_chains.mean(0)[mask]
    err = g_chains.std(0, ddof=1)[mask] / math.sqrt(g_chains.shape[0])
    chi2, dof = float((((mean - g_exact[mask]) / err) ** 2).sum()), int(mask.sum())
    z = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    upper = 0.5 * math.erfc(z / math.sqrt(2))  # Wilson-Hilferty P[X >= chi2]
    return chi2 / dof, upper, 1 - upper


@pytest.mark.parametrize("shape,n_sweeps", [((8, 8), 800), ((5, 7), 800), ((3, 4, 5), 400)])
def test_free_theory_propagator(shape, n_sweeps):
    """<|phi~(p)|^2>/V = 1/(phat^2 + m2) for every p (chi^2 over chains); m2 +- 10% rejected."""
    m2 = 0.5
    lat = Lattice(shape)
    met = LocalMetropolis(Phi4Action(m2, 0.0, d=lat.d), lat, 256, generator=gen(len(shape) + shape[0]))
    met.thermalize(200)
    acc = torch.zeros((met.n_chains, *shape), dtype=torch.float64)
    for phi in met.iter_samples(n_sweeps):
        acc += lat.fft(phi).abs() ** 2 / lat.volume
    g_chains = (acc / n_sweeps).numpy()
    mask = _unique_momentum_mask(lat)
    per_dof, upper, lower = _chi2(g_chains, lat.free_propagator(m2).numpy(), mask)
    assert upper > 1e-3 and lower > 1e-3, per_dof
    for wrong in (1.1 * m2, 0.9 * m2):
        per_dof_w, upper_w, _ = _chi2(g_chains, lat.free_propagator(wrong).numpy(), mask)
        assert upper_w < 1e-6, (wrong, per_dof_w)


def test_adaptation_hits_target_and_freezes():
    lat = Lattice(8)
    met = LocalMetropolis(Phi4Action(-1.0, 1.0), lat, 64, step_size=0.1, target_accept=0.4,
                          generator=gen(2))
    out = met.thermalize(200)
    assert out["step_size"] == met.step_size and met.step_size > 0.5
    frozen = met.step_size
    met.sample(100)
    assert met.step_size == frozen
    assert abs(met.stats()["acceptance"] - 0.4) < 0.03


def test_sample_shape_thinning_and_hits():
    lat = Lattice((4, 5))
    met = LocalMetropolis(Phi4Action(0.5, 0.1), lat, 3, n_hits=2, generator=gen(3))
    kept = met.sample(7, thin=2)
    assert kept.shape == (3, 3, 4, 5) and met.n_sweeps == 7
    assert not torch.equal(kept[0], kept[1])
    rate = met.sweep()
    assert rate.shape == (3,) and torch.all((rate > 0) & (rate <= 1))


@pytest.mark.parametrize("shape", [(6, 8), (5, 5)])
def test_state_dict_round_trip_bitwise(shape):
    lat = Lattice(shape)
    a = LocalMetropolis(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(4))
    a.thermalize(10)
    a.sample(3)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    cont = a.sample(6)
    b = LocalMetropolis(Phi4Action(-1.0, 1.0), lat, 4, step_size=0.2, generator=gen(77))
    b.load_state_dict({k: v.copy() for k, v in state.items()})
    assert torch.equal(b.sample(6), cont)
    assert a.step_size == b.step_size and a.n_sweeps == b.n_sweeps
    np.testing.assert_array_equal(a.stats()["acceptance_per_chain"], b.stats()["acceptance_per_chain"])


def test_thermalization_in_chunks_is_bitwise_identical():
    lat = Lattice(6)
    a = LocalMetropolis(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(5))
    a.thermalize(25)
    b = LocalMetropolis(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(5))
    b.thermalize(10)
    c = LocalMetropolis(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(6))
    c.load_state_dict(b.state_dict())
    c.thermalize(15)
    assert torch.equal(a.phi, c.phi) and a.step_size == c.step_size


def test_load_state_dict_rejects_other_configuration():
    state = LocalMetropolis(Phi4Action(-1.0, 1.0), Lattice(6), 4, generator=gen(0)).state_dict()
    with pytest.raises(ValueError, match="shape"):
        LocalMetropolis(Phi4Action(-1.0, 1.0), Lattice((6, 4)), 4, generator=gen(0)).load_state_dict(state)
    with pytest.raises(ValueError, match="lam"):
        LocalMetropolis(Phi4Action(-1.0, 0.5), Lattice(6), 4, generator=gen(0)).load_state_dict(state)
    del state["generator"]
    with pytest.raises(ValueError, match="generator"):
        LocalMetropolis(Phi4Action(-1.0, 1.0), Lattice(6), 4, generator=gen(0)).load_state_dict(state)


@pytest.mark.parametrize("kw,name", [
    (dict(n_chains=0), "n_chains"),
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=float("inf")), "step_size"),
    (dict(n_hits=0), "n_hits"),
    (dict(target_accept=1.5), "target_accept"),
    (dict(generator=None), "generator"),
    (dict(lattice=Lattice(4, d=3)), "lattice.d"),
    (dict(dtype=torch.float16), "dtype"),
    (dict(phi0=torch.zeros(2, 4, dtype=torch.float64)), "phi0"),
])
def test_bad_input_raises_value_error_naming_parameter(kw, name):
    args = dict(action=Phi4Action(0.5, 1.0), lattice=Lattice(4), n_chains=2, generator=gen(0))
    args.update(kw)
    with pytest.raises(ValueError) as info:
        LocalMetropolis(args.pop("action"), args.pop("lattice"), args.pop("n_chains"), **args)
    assert name in str(info.value)
    met = LocalMetropolis(Phi4Action(0.5, 1.0), Lattice(4), 2, generator=gen(0))
    with pytest.raises(ValueError, match="thin"):
        met.sample(3, thin=0)
