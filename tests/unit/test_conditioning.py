"""Coupling-conditioned models (rgdist.models.conditioning) and the data-parallel grid trainer
(rgdist.train.grid): exact statements, checked bit for bit or to rounding."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice, Phi4Action
from rgdist.models import build_model, named_arrays
from rgdist.models.conditioning import (
    CouplingWindow,
    SpectrumTable,
    condition_model,
    set_couplings,
)
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig
from rgdist.train.grid import GridPointData, GridTrainer

LAT = Lattice(8)
WINDOW = CouplingWindow((-0.8, -0.4), (1.0, 1.0))


def _free_G(m2):
    return 1.0 / (LAT.phat2(dtype=torch.float64) + m2)


def _model(name, gaussian_exact=True, seed=0):
    scheme = build_scheme("carosso", LAT)
    kw = dict(channels=4, blocks=1) if name == "conv" else {}
    if name == "trace":
        kw = dict(channels=2)
    net = build_model(name, LAT, scheme=scheme, data_spectrum=_free_G(1.0) if gaussian_exact else None,
                      gaussian_exact=gaussian_exact, generator=torch.Generator().manual_seed(seed), **kw)
    return net, scheme


@pytest.mark.parametrize("name", ["conv", "trace", "effective", "unet"])
def test_fresh_conditioning_changes_nothing(name):
    """W_c = 0 at conditioning: the conditioned model equals the plain one bit for bit at any
    coupling in the window (x + 0 is exact)."""
    plain, _ = _model(name)
    cond, _ = _model(name)
    condition_model(cond, WINDOW)
    phi = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.01, 0.5, 3.0], dtype=torch.float64)
    ref = plain(phi, t)
    for m2 in (-0.8, -0.55, -0.4):
        set_couplings(cond, m2, 1.0, _free_G(1.0))
        assert torch.equal(cond(phi, t), ref)


def test_conditioning_reaches_the_output():
    """With W_c != 0 the score depends on the coupling (the input is wired in)."""
    cond, _ = _model("conv")
    condition_model(cond, WINDOW)
    with torch.no_grad():
        for n, p in cond.named_parameters():
            if n.endswith("embed.coupling"):
                p.normal_(generator=torch.Generator().manual_seed(2))
    # the conv remainder starts with zero time gains: give it a non-zero output gain
    with torch.no_grad():
        for p in cond.parameters():
            p.add_(1e-2)
    phi = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = set_couplings(cond, -0.8, 1.0, _free_G(1.0))(phi, 0.5)
    b = set_couplings(cond, -0.4, 1.0, _free_G(1.0))(phi, 0.5)
    assert not torch.equal(a, b)


def test_window_checks():
    cond, _ = _model("conv", gaussian_exact=False)
    condition_model(cond, WINDOW)
    with pytest.raises(ValueError, match=r"outside the trained window m2 in \[-0.8, -0.4\]"):
        set_couplings(cond, -1.0, 1.0)
    with pytest.raises(ValueError, match="outside the trained window"):
        set_couplings(cond, -0.6, 1.5)
    set_couplings(cond, -1.0, 1.0, allow_outside=True)  # explicitly allowed
    with pytest.raises(ValueError, match="already conditioned"):
        condition_model(cond, WINDOW)
    ge, _ = _model("conv")
    condition_model(ge, WINDOW)
    with pytest.raises(ValueError, match="needs the spectrum"):
        set_couplings(ge, -0.6, 1.0)


def test_spectrum_table_exact_at_points_and_log_bilinear_between():
    """At a training point the measured G comes back bit for bit; for G = exp(a + b m2 + c lam
    + d m2 lam) (bilinear in log) the interpolation is exact to rounding (|log G| <~ 3, so
    |delta log G| <= a few 1e-16; checked at 1e-13 relative)."""
    p = LAT.phat2(dtype=torch.float64).numpy()
    m2s, lams = [-1.0, -0.6, -0.2], [0.5, 1.0]

    def g(m2, lam):
        return np.exp(0.3 - 0.1 * p + 0.7 * m2 - 0.2 * lam + 0.05 * m2 * lam * p)

    cpl = [(m, l) for m in m2s for l in lams]
    table = SpectrumTable(cpl, [g(*c) for c in cpl])
    for c in cpl:
        assert np.array_equal(table.at(*c).numpy(), g(*c))
    for m2, lam in [(-0.83, 0.61), (-0.3, 0.99), (-0.6, 0.75)]:
        np.testing.assert_allclose(table.at(m2, lam).numpy(), g(m2, lam), rtol=1e-13)
    with pytest.raises(ValueError, match="outside the trained window"):
        table.at(0.1, 1.0)
    one_m2 = [c for c in cpl if c[1] == 0.5] + [(-0.6, 1.0)]
    with pytest.raises(ValueError, match=r"product grid.*lam = 1 has only one"):
        SpectrumTable(one_m2, [g(*c) for c in one_m2])


def test_spectrum_table_rows_follow_a_sheared_grid():
    """A grid whose m2 interval moves with lam (rows of constant lam, as along a critical
    line): exact at the points, and exact to rounding for log G bilinear in (u, lam) with
    u = (m2 - lo(lam)) / (hi(lam) - lo(lam)) the relative position in the row (|log G| <~ 3:
    checked at 1e-13 relative); outside the ruled region between the rows: ValueError naming
    the rows, even inside the bounding box."""
    p = LAT.phat2(dtype=torch.float64).numpy()
    rows = {0.5: [-0.8, -0.7, -0.55], 1.0: [-1.4, -1.2], 2.0: [-2.5, -2.3, -2.2, -2.1]}

    def lo_hi(lam):
        b = (lam - 0.5) / 0.5 if lam <= 1.0 else (lam - 1.0) / 1.0
        r0, r1 = (rows[0.5], rows[1.0]) if lam <= 1.0 else (rows[1.0], rows[2.0])
        return (1 - b) * r0[0] + b * r1[0], (1 - b) * r0[-1] + b * r1[-1]

    def g(m2, lam):
        lo, hi = lo_hi(lam)
        u = (m2 - lo) / (hi - lo)
        return np.exp(0.2 - 0.1 * p + 0.6 * u - 0.3 * lam + 0.4 * u * lam * p)

    cpl = [(m, l) for l, ms in rows.items() for m in ms]
    table = SpectrumTable(cpl, [g(*c) for c in cpl])
    assert not table.product
    for c in cpl:
        assert np.array_equal(table.at(*c).numpy(), g(*c))
    for m2, lam in [(-1.0, 0.75), (-0.9, 0.6), (-1.7, 1.4), (-2.35, 1.9), (-1.3, 1.0)]:
        np.testing.assert_allclose(table.at(m2, lam).numpy(), g(m2, lam), rtol=1e-13)
    with pytest.raises(ValueError, match=r"outside the trained window: rows lam = 0.5"):
        table.at(-0.7, 1.0)  # inside the box m2 in [-2.5, -0.55], lam in [0.5, 2]
    assert table.at(-0.7, 1.0, allow_outside=True).shape == p.shape


def _grid_points(indices, data):
    pts = []
    for i in indices:
        m2 = [-0.8, -0.6, -0.4][i]
        pts.append(GridPointData(index=i, m2=m2, lam=1.0, action=Phi4Action(m2, 1.0),
                                 data=EnsembleData(data[i]), spectrum=_free_G(1.0 + 0.1 * i)))
    return pts


def _trainer(indices, data, reduce, steps=4):
    model, scheme = _model("conv")
    condition_model(model, WINDOW)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, warmup=0, log_every=0)

    def streams(i, k):
        return torch.Generator().manual_seed(1000 * i + k)

    return GridTrainer(model, scheme, _grid_points(indices, data), cfg, n_points=3,
                       streams=streams, reduce=reduce)


def _data():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(32, 8, 8, generator=g, dtype=torch.float64) * (1 + 0.1 * i)
            for i in range(3)]


def test_grid_trainer_is_the_same_for_any_split():
    """Points {0, 1, 2} on one process vs {0, 2} and {1} on two (threads exchanging their
    gradients): the shared model after 4 steps is bitwise identical, and so is the state."""
    data = _data()
    one = _trainer([0, 1, 2], data, lambda d: dict(d))
    one.fit()

    barrier, box = threading.Barrier(2), [{}, {}]

    def make_reduce(slot):
        def reduce(local):
            box[slot] = dict(local)
            barrier.wait()
            out = {**box[0], **box[1]}
            barrier.wait()
            return out
        return reduce

    two = [_trainer([0, 2], data, make_reduce(0)), _trainer([1], data, make_reduce(1))]
    threads = [threading.Thread(target=t.fit) for t in two]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ref = one.state_dict()
    for t in two:
        st = t.state_dict()
        assert sorted(st) == sorted(ref)
        for k in ref:
            assert np.array_equal(st[k], ref[k]), k
    assert one.step == 4 and len(one.point_losses) == 4 and len(one.point_losses[0]) == 3


def test_grid_trainer_resume_is_bitwise():
    data = _data()
    full = _trainer([0, 1, 2], data, lambda d: dict(d), steps=6)
    full.fit()
    part = _trainer([0, 1, 2], data, lambda d: dict(d), steps=6)
    part.fit(until=3)
    state = part.state_dict()
    again = _trainer([0, 1, 2], data, lambda d: dict(d), steps=6)
    again.load_state_dict(state)
    again.fit()
    a, b = full.state_dict(), again.state_dict()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ema = named_arrays(full.ema_model())
    assert all(np.array_equal(v, named_arrays(again.ema_model())[k]) for k, v in ema.items())


def test_grid_trainer_needs_a_conditioned_model():
    model, scheme = _model("conv")
    cfg = TrainConfig(steps=1, batch_size=4, log_every=0)
    with pytest.raises(ValueError, match="coupling-conditioned"):
        GridTrainer(model, scheme, [], cfg, n_points=1, streams=lambda i, k: None)


def test_binding_never_writes_into_the_callers_spectrum():
    """GaussianExactScore keeps the tensor it was built with; binding another coupling must
    replace the buffer, not copy into it (an in-place copy changed the caller's G: found
    as a rank-count dependence of the grid campaign)."""
    G0 = _free_G(1.0)
    keep = G0.clone()
    model, _ = _model("conv")
    condition_model(model, WINDOW)
    model.data_spectrum = G0  # the buffer aliases the caller's tensor
    set_couplings(model, -0.4, 1.0, _free_G(2.0))
    assert torch.equal(G0, keep)
    assert torch.equal(model.data_spectrum, _free_G(2.0))
