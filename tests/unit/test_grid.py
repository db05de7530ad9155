"""Grid axes, expansion into points and point ids (rgdist.campaign.grid)."""
import hashlib
import json
import math

import pytest

from rgdist.campaign import grid as G
from rgdist.errors import ConfigError
from rgdist.lattice.action import hopping_to_standard


def _raises(path, fn, *args, match=None, **kw):
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    assert info.value.path == path, str(info.value)
    assert "\n" not in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)
    return info.value


# --- key paths and scalar checks -------------------------------------------------------------
def test_join_formats_key_paths():
    assert G.join("", "hmc") == "hmc"
    assert G.join("hmc", "n_chains") == "hmc.n_chains"
    assert G.join("grid.m2.linspace", 2) == "grid.m2.linspace[2]"
    assert G.join("a", "odd key") == "a['odd key']"
    assert G.join("a", True) == "a[True]"


@pytest.mark.parametrize("value", [True, False, 64.0, "64", None, [64], 1.5])
def test_check_int_is_strict(value):
    _raises("x.n", G.check_int, value, "x.n", lo=1, match="integer")


def test_check_int_bounds():
    assert G.check_int(5, "p", lo=1, hi=5) == 5
    _raises("p", G.check_int, 0, "p", lo=1, match=">= 1")
    _raises("p", G.check_int, 6, "p", hi=5, match="<= 5")


@pytest.mark.parametrize("value", [True, "abc", "1.5", None, [1.0], {"a": 1}])
def test_check_real_rejects_non_numbers(value):
    _raises("x", G.check_real, value, "x", match="finite number")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400])
def test_check_real_rejects_non_finite(value):
    _raises("x", G.check_real, value, "x", match="finite")


def test_check_real_accepts_ints_and_yaml11_exponent_strings():
    assert G.check_real(3, "x") == 3.0 and isinstance(G.check_real(3, "x"), float)
    assert G.check_real("2e-3", "x") == 2e-3
    assert G.check_real("-1.5E+2", "x") == -150.0
    _raises("x", G.check_real, 0.0, "x", lo=0, lo_open=True, match="> 0")
    _raises("x", G.check_real, 1.0, "x", lo=0, hi=1, hi_open=True, match="[0, 1)")


# --- axes --------------------------------------------------------------------------------------
def test_axis_scalar_and_list():
    assert G.parse_axis(0.5, "grid.m2", 10) == ((0.5,), ("grid.m2",))
    vals, paths = G.parse_axis([1, -2.5], "grid.m2", 10)
    assert vals == (1.0, -2.5) and paths == ("grid.m2[0]", "grid.m2[1]")
    _raises("grid.m2[1]", G.parse_axis, [1.0, True], "grid.m2", 10)
    _raises("grid.m2[0]", G.parse_axis, [math.nan], "grid.m2", 10)
    _raises("grid.m2", G.parse_axis, [], "grid.m2", 10, match="empty")
    _raises("grid.m2", G.parse_axis, "abc", "grid.m2", 10)
    _raises("grid.m2", G.parse_axis, [0.0] * 11, "grid.m2", 10, match="max_points")


def test_range_is_exact_in_decimal_and_excludes_stop():
    vals, _ = G.parse_axis({"range": [0, 1, 0.1]}, "grid.m2", 100)
    assert vals == tuple(k / 10 for k in range(10))  # the floats nearest to 0.0, 0.1, ..., 0.9
    vals, _ = G.parse_axis({"range": [-0.3, 0.3, 0.1]}, "grid.m2", 100)
    assert vals == (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2)  # no 5.55e-17 instead of 0
    vals, _ = G.parse_axis({"range": [1, -1, -0.5]}, "grid.m2", 100)
    assert vals == (1.0, 0.5, 0.0, -0.5)
    vals, _ = G.parse_axis({"range": [0, 1.05, 0.5]}, "grid.m2", 100)
    assert vals == (0.0, 0.5, 1.0)


def test_range_errors():
    _raises("grid.m2.range[2]", G.parse_axis, {"range": [0, 1, 0]}, "grid.m2", 100, match="nonzero")
    _raises("grid.m2.range", G.parse_axis, {"range": [0, -1, 0.1]}, "grid.m2", 100, match="empty")
    _raises("grid.m2.range", G.parse_axis, {"range": [0, 1, 1e-9]}, "grid.m2", 100, match="max_points")
    _raises("grid.m2.range", G.parse_axis, {"range": [0, 1]}, "grid.m2", 100)
    _raises("grid.m2.range[1]", G.parse_axis, {"range": [0, "x", 1]}, "grid.m2", 100)


def test_linspace_values_and_errors():
    vals, paths = G.parse_axis({"linspace": [-1.3, -0.5, 3]}, "grid.m2", 100)
    assert vals == (-1.3, -0.9, -0.5) and len(paths) == 3
    vals, _ = G.parse_axis({"linspace": [0, 1, 4]}, "grid.m2", 100)
    assert vals[0] == 0.0 and vals[-1] == 1.0 and vals[1] == 1 / 3 and vals[2] == 2 / 3
    assert G.parse_axis({"linspace": [2.0, 5.0, 1]}, "grid.m2", 100)[0] == (2.0,)
    _raises("grid.m2.linspace[2]", G.parse_axis, {"linspace": [0, 1, 0]}, "grid.m2", 100, match=">= 1")
    _raises("grid.m2.linspace[2]", G.parse_axis, {"linspace": [0, 1, 2.0]}, "grid.m2", 100)
    _raises("grid.m2.linspace[2]", G.parse_axis, {"linspace": [0, 1, 10**12]}, "grid.m2", 100,
            match="max_points")
    _raises("grid.m2.linspace[0]", G.parse_axis, {"linspace": [math.inf, 1, 3]}, "grid.m2", 100)


def test_generated_axis_dict_must_have_one_known_key():
    _raises("grid.m2.arange", G.parse_axis, {"arange": [0, 1, 0.1]}, "grid.m2", 100, match="range, linspace")
    _raises("grid.m2", G.parse_axis, {"range": [0, 1, 0.5], "linspace": [0, 1, 2]}, "grid.m2", 100)


def test_axis_physics_limits():
    G.check_axis_physics("lam", (0.0, 1.0), ("a", "b"))
    _raises("b", G.check_axis_physics, "lam", (0.0, -1e-9), ("a", "b"), match="lam must be >= 0")
    _raises("a", G.check_axis_physics, "lam_h", (-0.1,), ("a",))
    _raises("a", G.check_axis_physics, "kappa", (0.0,), ("a",), match="kappa must be > 0")


# --- expansion ---------------------------------------------------------------------------------
def _axes(*lists, name="grid"):
    names = ("m2", "lam") if name == "grid" else name
    return [(tuple(map(float, v)), tuple(f"grid.{n}[{i}]" for i in range(len(v))))
            for n, v in zip(names, lists)]


SHAPES = ((8, 8), (16, 16))
SPATHS = ("lattice.N[0]", "lattice.N[1]")


def test_product_order_shapes_outermost():
    pts = G.expand_grid(SHAPES, SPATHS, "standard", _axes([-1, 0.5], [1, 2]), "product", 100, "ctx")
    got = [(p.index, p.N, p.m2, p.lam) for p in pts]
    want = [(i, s, m2, lam) for i, (s, m2, lam) in enumerate(
        (s, m2, lam) for s in SHAPES for m2 in (-1.0, 0.5) for lam in (1.0, 2.0))]
    assert got == want
    assert all(p.kappa is None and p.lam_h is None for p in pts)


def test_zip_pairs_elementwise_and_needs_equal_lengths():
    pts = G.expand_grid(SHAPES[:1], SPATHS[:1], "standard", _axes([-1, 0.5], [1, 2]), "zip", 100, "c")
    assert [(p.m2, p.lam) for p in pts] == [(-1.0, 1.0), (0.5, 2.0)]
    _raises("grid", G.expand_grid, SHAPES, SPATHS, "standard", _axes([1, 2, 3], [1, 2]), "zip", 100, "c",
            match="equal length")


def test_point_count_limit():
    assert len(G.expand_grid(SHAPES, SPATHS, "standard", _axes([1, 2, 3], [1, 2]), "product", 12, "c")) == 12
    _raises("grid", G.expand_grid, SHAPES, SPATHS, "standard", _axes([1, 2, 3], [1, 2]), "product", 11, "c",
            match="12 points")


def test_free_theory_needs_positive_m2():
    e = _raises("grid.m2[1]", G.expand_grid, SHAPES, SPATHS, "standard", _axes([0.5, 0.0], [0.0]),
                "product", 100, "c")
    assert "grid.lam[0]" in str(e)
    # the same m2 with lam > 0 is fine
    G.expand_grid(SHAPES, SPATHS, "standard", _axes([0.5, 0.0], [0.1]), "product", 100, "c")


def test_duplicate_points_rejected():
    _raises("grid", G.expand_grid, SHAPES, SPATHS, "standard", _axes([0.5, 0.5], [1.0]), "product", 100, "c",
            match="duplicate")


def test_hopping_points_are_converted_exactly_and_keep_both():
    kappas, lam_hs = [0.2, 0.27], [0.0, 0.02]
    # lam_h = 0 with kappa = 0.27 > 1/4 would be unbounded: use zip to avoid that pair
    axes = _axes(kappas, lam_hs, name=("kappa", "lam_h"))
    pts = G.expand_grid(SHAPES[:1], SPATHS[:1], "hopping", axes, "zip", 100, "c")
    for p, k, lh in zip(pts, kappas, lam_hs):
        assert (p.m2, p.lam) == hopping_to_standard(k, lh, 2)
        assert (p.kappa, p.lam_h) == (k, lh)
    assert pts[0].m2 == pytest.approx(1 / 0.2 - 4)


def test_hopping_free_theory_beyond_kappa_c_rejected():
    axes = _axes([0.2, 0.3], [0.0], name=("kappa", "lam_h"))
    _raises("grid.kappa[1]", G.expand_grid, SHAPES, SPATHS, "hopping", axes, "product", 100, "c",
            match="kappa")


@pytest.mark.parametrize("kappa", [1e-200, 1e-160, 1e200])
def test_hopping_overflow_rejected(kappa):
    axes = _axes([kappa], [0.5], name=("kappa", "lam_h"))
    _raises("grid.kappa[0]", G.expand_grid, SHAPES[:1], SPATHS[:1], "hopping", axes, "product", 100, "c",
            match="non-finite")


# --- point ids -------------------------------------------------------------------------------
def test_point_id_formula():
    physics = {"d": 2, "N": [8, 16], "m2": -0.5, "lam": 1.0}
    text = json.dumps({"physics": physics, "context": "abc"}, sort_keys=True, separators=(",", ":"))
    want = hashlib.sha256(text.encode()).hexdigest()[:16]
    assert G.point_id((8, 16), -0.5, 1, "abc") == want
    assert len(want) == 16 and int(want, 16) >= 0


def test_point_ids_stable_and_distinct():
    a = G.expand_grid(SHAPES, SPATHS, "standard", _axes([-1, 0.5], [1, 2]), "product", 100, "ctx")
    b = G.expand_grid(SHAPES, SPATHS, "standard", _axes([-1, 0.5], [1, 2]), "product", 100, "ctx")
    assert [p.point_id for p in a] == [p.point_id for p in b]
    assert len({p.point_id for p in a}) == len(a)
    c = G.expand_grid(SHAPES, SPATHS, "standard", _axes([-1, 0.5], [1, 2]), "product", 100, "other")
    assert not {p.point_id for p in a} & {p.point_id for p in c}
    # the id does not depend on the point's position in the grid
    d = G.expand_grid(SHAPES[::-1], SPATHS, "standard", _axes([0.5, -1, 7], [2]), "product", 100, "ctx")
    ids_a = {(p.N, p.m2, p.lam): p.point_id for p in a}
    for p in d:
        if (p.N, p.m2, p.lam) in ids_a:
            assert ids_a[(p.N, p.m2, p.lam)] == p.point_id


def test_gridpoint_views():
    (p,) = G.expand_grid(((4, 6),), ("lattice.N[0]",), "standard", _axes([0.5], [0]), "product", 10, "c")
    assert p.shape == p.N == (4, 6) and p.d == 2 and p.volume == 24
    assert p.seed_key == int(p.point_id, 16) and 0 <= p.seed_key < 2**64
    assert p.physics() == {"d": 2, "N": [4, 6], "m2": 0.5, "lam": 0.0}
    assert p.to_dict()["point_id"] == p.point_id and "kappa" not in p.to_dict()
    assert "N=4x6" in p.label()
    json.dumps(p.to_dict())
