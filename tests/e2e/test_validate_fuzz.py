"""`rgdist validate` on many deterministic mutations of campaigns/default.yaml.

Every bad file must give exit code 2, exactly one stderr line "error: <key path>: ...", and
write nothing next to the file (the working directory is the file's own temp folder). Valid
files exit 0. Every case runs in-process through ``rgdist.cli.main``; a selection (and the
valid files) also runs as ``python -m rgdist validate FILE`` in a subprocess.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rgdist
from rgdist.cli import main

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "campaigns" / "default.yaml"


def _default():
    return yaml.safe_load(DEFAULT.read_text())


def put(path, value):
    """Mutation setting a dotted key path (sections are created when missing)."""
    def mutate(d):
        node, keys = d, path.split(".")
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
        return d
    return mutate


def drop(path):
    def mutate(d):
        node, keys = d, path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node.pop(keys[-1], None)
        return d
    return mutate


def chain(*fns):
    def mutate(d):
        for f in fns:
            d = f(d)
        return d
    return mutate


def text(fn):
    """Mutation of the raw file text (str or bytes result)."""
    fn.raw = True
    return fn


# (case id, mutation, expected key path; "" means no key path: then `hint` must appear)
BAD = [
    # unknown keys at several depths
    ("unknown-top", put("foo", 1), "foo"),
    ("unknown-hmc", put("hmc.n_chainz", 64), "hmc.n_chainz"),
    ("unknown-lattice", put("lattice.L", 8), "lattice.L"),
    ("unknown-grid-axis", put("grid.kappa", [0.1]), "grid.kappa"),
    ("unknown-in-linspace", put("grid.m2", {"linspace": [0.1, 1.0, 3], "num": 3}), "grid.m2.num"),
    ("foreign-scheme-param", chain(put("scheme", {"name": "carosso"}), put("scheme.beta_min", 0.1)),
     "scheme.beta_min"),
    ("foreign-model-param", chain(put("model", {"name": "conv"}), put("model.levels", 2)), "model.levels"),
    ("unknown-resources", put("resources.gpus", 4), "resources.gpus"),
    # wrong types
    ("bool-for-int", put("hmc.n_chains", True), "hmc.n_chains"),
    ("float-for-int", put("hmc.n_chains", 64.0), "hmc.n_chains"),
    ("string-for-int", put("train.steps", "1000"), "train.steps"),
    ("list-for-int", put("sample.batch_size", [256]), "sample.batch_size"),
    ("string-for-real", put("train.lr", "fast"), "train.lr"),
    ("int-for-bool", put("hmc.fourier_accel", 1), "hmc.fourier_accel"),
    ("string-for-bool", put("sample.denoise", "yes please"), "sample.denoise"),
    ("section-not-mapping", put("hmc", [1, 2]), "hmc"),
    ("scalar-record-times", put("measure.record_times", 1.0), "measure.record_times"),
    ("seed-float", put("seed", 1.5), "seed"),
    # negative or zero sizes, bad ranges
    ("negative-chains", put("hmc.n_chains", -64), "hmc.n_chains"),
    ("zero-steps", put("train.steps", 0), "train.steps"),
    ("negative-samples", put("sample.n_samples", -1), "sample.n_samples"),
    ("zero-step-size", put("hmc.step_size", 0.0), "hmc.step_size"),
    ("accept-one", put("hmc.target_accept", 1.0), "hmc.target_accept"),
    ("keep-zero", put("checkpoint.keep", 0), "checkpoint.keep"),
    ("ranks-zero", put("resources.ranks_per_point", 0), "resources.ranks_per_point"),
    ("lattice-N1", put("lattice.N", [8, 1]), "lattice.N[1]"),
    ("lattice-d0", put("lattice.d", 0), "lattice.d"),
    ("negative-T", put("scheme.T", -1.0), "scheme.T"),
    ("blocks-not-dividing", chain(put("hmc.n_chains", 64), put("hmc.chains_per_block", 24)),
     "hmc.chains_per_block"),
    ("warmup-too-long", chain(put("train.steps", 100), put("train.warmup", 100)), "train.warmup"),
    # invalid physics and empty or huge grids
    ("negative-lam", put("grid.lam", [1.0, -0.5]), "grid.lam[1]"),
    ("free-negative-m2", chain(put("grid.m2", [-0.5]), put("grid.lam", [0.0])), "grid.m2[0]"),
    ("nan-m2", put("grid.m2", [float("nan")]), "grid.m2[0]"),
    ("empty-m2", put("grid.m2", []), "grid.m2"),
    ("empty-N", put("lattice.N", []), "lattice.N"),
    ("empty-range", put("grid.m2", {"range": [-0.5, -1.0, 0.1]}), "grid.m2.range"),
    ("zero-linspace", put("grid.m2", {"linspace": [-1.0, 0.0, 0]}), "grid.m2.linspace[2]"),
    ("zero-range-step", put("grid.m2", {"range": [-1.0, 0.0, 0]}), "grid.m2.range[2]"),
    ("huge-linspace", put("grid.m2", {"linspace": [-1.0, 0.0, 10**9]}), "grid.m2.linspace[2]"),
    ("huge-product", chain(put("grid.m2", {"linspace": [-1.0, 0.0, 200]}),
                           put("grid.lam", {"linspace": [0.5, 1.5, 200]})), "grid"),
    ("max-points-small", chain(put("lattice.N", [8, 16]), put("grid.m2", [-1.0, -0.5, 0.5]),
                               put("grid.lam", [1.0]), put("grid.max_points", 5)), "grid"),
    ("zip-unequal", chain(put("grid.combine", "zip"), put("grid.m2", [-1.0, -0.5]),
                          put("grid.lam", [1.0, 2.0, 3.0])), "grid"),
    ("hopping-with-m2", put("theory.parametrization", "hopping"), "grid.m2"),
    ("hopping-negative-kappa", chain(put("theory.parametrization", "hopping"),
                                     put("grid", {"kappa": [-0.1], "lam_h": [0.01]})), "grid.kappa[0]"),
    ("record-beyond-T", chain(put("scheme", {"name": "vp", "T": 1.0}), put("measure.record_times", [0.5, 2.0])),
     "measure.record_times[1]"),
    # paths escaping the run directory
    ("results-absolute", put("output.results", "/tmp/results.h5"), "output.results"),
    ("results-dotdot", put("output.results", "../results.h5"), "output.results"),
    ("results-nested-escape", put("output.results", "a/../../results.h5"), "output.results"),
    ("results-home", put("output.results", "~/results.h5"), "output.results"),
    # bad names
    ("bad-scheme", put("scheme", {"name": "ddpm"}), "scheme.name"),
    ("bad-model", put("model", {"name": "transformer"}), "model.name"),
    ("bad-solver", put("sample.solver", "rk4"), "sample.solver"),
    ("bad-time-grid", put("sample.grid", "cosine"), "sample.grid"),
    ("bad-integrator", put("hmc.integrator", "verlet"), "hmc.integrator"),
    ("bad-weighting", put("train.weighting", "snr"), "train.weighting"),
    ("bad-combine", put("grid.combine", "cartesian"), "grid.combine"),
    ("bad-device", put("resources.device", "tpu"), "resources.device"),
    ("bad-dtype", put("model.dtype", "float16"), "model.dtype"),
    ("bad-operator", put("model", {"name": "effective", "operators": ["phi2", "phi3"]}), "model.operators[1]"),
    ("bad-parametrization", put("theory.parametrization", "lattice"), "theory.parametrization"),
    ("bad-correct-pairing", put("correct", {"method": "mh", "likelihood": "hutchinson",
                                            "integrator": "implicit"}), "correct.integrator"),
    # schema
    ("schema-2", put("schema_version", 2), "schema_version"),
    ("schema-missing", drop("schema_version"), "schema_version"),
    ("lattice-missing", drop("lattice"), "lattice"),
]


@text
def _unclosed(t):
    return t.replace("N: [8, 16]", "N: [8, 16") if "N: [8, 16]" in t else t + "\nlattice: {N: [8\n"


@text
def _tab(t):
    return t.replace("\n  d: 2", "\n\td: 2") if "\n  d: 2" in t else t + "\nhmc:\n\tn_chains: 4\n"


RAW = [
    ("yaml-unclosed", _unclosed, "", "malformed YAML at line"),
    ("yaml-tab", _tab, "", "malformed YAML at line"),
    ("yaml-duplicate-section", text(lambda t: t + "\nhmc: {n_chains: 8}\n"), "hmc", "duplicate key"),
    ("yaml-top-list", text(lambda t: "- 1\n- 2\n"), "", "mapping"),
    ("yaml-empty", text(lambda t: ""), "", "empty document"),
    ("yaml-two-docs", text(lambda t: t + "\n---\nseed: 1\n"), "", "malformed YAML"),
    ("yaml-python-tag", text(lambda t: "!!python/object/apply:os.system ['touch pwned']\n"), "", "malformed YAML"),
    ("yaml-not-utf8", text(lambda t: t.encode() + b"\n# \xff\xfe\n"), "", "UTF-8"),
    # former (layout-1) spellings of the correction section: refused, the new one named
    ("section-renamed-exact", text(lambda t: t + "\nexact: {method: reweight}\n"), "exact",
     "now called correct"),
    ("likelihood-renamed-exact", text(lambda t: t + "\ncorrect: {method: reweight, likelihood: exact}\n"),
     "correct.likelihood", "now spelled 'trace'"),
]

VALID = [
    ("default", lambda d: d),
    ("hopping", chain(put("theory.parametrization", "hopping"),
                      put("grid", {"kappa": {"linspace": [0.25, 0.28, 4]}, "lam_h": [0.02]}))),
    ("zip", chain(put("grid.combine", "zip"), put("grid.m2", [-1.0, -0.5]), put("grid.lam", [1.0, 2.0]))),
    ("unet", chain(put("model", {"name": "unet", "levels": 3}), put("lattice.N", [8, 16]))),
    ("polchinski", chain(put("scheme", {"name": "polchinski"}), put("measure.record_times", [0.0, 1.0, 2.0]))),
    ("exponent-string", put("train.lr", "3e-4")),
    ("results-subdir", put("output.results", "out/results.h5")),
    ("correct-trace", put("correct", {"method": "reweight", "likelihood": "trace", "integrator": "rk4"})),
]

assert len(BAD) + len(RAW) >= 40


def _content(mutation):
    if getattr(mutation, "raw", False):
        return mutation(DEFAULT.read_text())
    return yaml.safe_dump(mutation(copy.deepcopy(_default())), sort_keys=False)


def _write(folder: Path, content) -> Path:
    folder.mkdir()
    f = folder / "campaign.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    return f


def _in_process(f: Path, capsys, monkeypatch):
    monkeypatch.chdir(f.parent)
    capsys.readouterr()
    try:
        rc = main(["validate", f.name])
    except SystemExit as exc:  # a main that exits instead of returning
        rc = exc.code
    out, err = capsys.readouterr()
    return (0 if rc is None else rc), out, err


def _subprocess(f: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    pkg_root = str(Path(rgdist.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run([sys.executable, "-m", "rgdist", "validate", f.name], cwd=f.parent, env=env,
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def _check_error(rc, err, f: Path, path: str, hint: str | None):
    lines = err.splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    if path:
        assert line.startswith(f"error: {path}: "), line
    if hint:
        assert hint in line, line
    assert sorted(os.listdir(f.parent)) == [f.name], "validate wrote files"


CASES = [(name, m, path, None) for name, m, path in BAD] + RAW


@pytest.mark.parametrize("name,mutation,path,hint", CASES, ids=[c[0] for c in CASES])
def test_bad_file_in_process(name, mutation, path, hint, tmp_path, capsys, monkeypatch):
    f = _write(tmp_path / name, _content(mutation))
    rc, _, err = _in_process(f, capsys, monkeypatch)
    _check_error(rc, err, f, path, hint)


@pytest.mark.parametrize("name,mutation", VALID, ids=[v[0] for v in VALID])
def test_valid_file_in_process(name, mutation, tmp_path, capsys, monkeypatch):
    f = _write(tmp_path / name, _content(mutation))
    rc, out, err = _in_process(f, capsys, monkeypatch)
    assert rc == 0 and err == "", err
    assert "grid point(s)" in out
    assert sorted(os.listdir(f.parent)) == [f.name]


def test_missing_file_in_process(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    rc = main(["validate", "nope.yaml"])
    _, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and "not found" in err and len(err.splitlines()) == 1
    assert os.listdir(folder) == []


SUBPROCESS = ["unknown-hmc", "float-for-int", "huge-linspace", "results-dotdot", "bad-solver",
              "free-negative-m2", "yaml-unclosed", "yaml-python-tag", "section-renamed-exact"]


def test_subprocess_cli(tmp_path):
    """The real command line on a selection of the cases and on the shipped campaigns."""
    by_name = {c[0]: c for c in CASES}
    for name in SUBPROCESS:
        _, mutation, path, hint = by_name[name]
        f = _write(tmp_path / name, _content(mutation))
        rc, _, err = _subprocess(f)
        _check_error(rc, err, f, path, hint)
    for shipped in sorted((ROOT / "campaigns").glob("*.yaml")):
        f = _write(tmp_path / f"ok-{shipped.stem}", shipped.read_text())
        rc, out, err = _subprocess(f)
        assert rc == 0 and err == "", (shipped.name, err)
        assert "grid point(s)" in out
        assert sorted(os.listdir(f.parent)) == [f.name]
    folder = tmp_path / "missing"
    folder.mkdir()
    rc, _, err = _subprocess(folder / "nope.yaml")
    assert rc == 2 and err.startswith("error: ") and "not found" in err and os.listdir(folder) == []
