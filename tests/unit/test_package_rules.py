"""House rules of the package, checked on the source: no import circle, no module over 450
lines, mpi4py in one module, h5py in the io layer only, a physics core free of MPI, files and
YAML, and no private helper imported across packages."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "rgdist"
MAX_LINES = 450


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(path: Path, name: str) -> list[tuple[str, list[str], bool]]:
    """(module, imported names, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            out.append((mod, [a.name for a in node.names], id(node) in top))
    return out


def graph(level_only: bool) -> dict[str, set[str]]:
    mods = modules()
    g = {m: set() for m in mods}
    for m, p in mods.items():
        for target, names, top in imports(p, m):
            if level_only and not top:
                continue
            for cand in [f"{target}.{n}" for n in names] + [target]:
                if cand in mods and cand != m:
                    g[m].add(cand)
                    break
    return g


def cycles(g) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def _package_edges_only(g):
    """Edges between modules, ignoring a package's __init__ re-exporting its own modules."""
    return {m: {t for t in ts if not (t.startswith(m + ".") or m.startswith(t + "."))} for m, ts in g.items()}


def test_no_import_circle():
    # function-level (deferred) imports count too: a circle through them is still a circle
    assert cycles(_package_edges_only(graph(level_only=False))) == []


def test_no_module_over_the_line_limit():
    big = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def test_mpi_h5py_and_yaml_stay_in_their_layers():
    core = ("rgdist.lattice", "rgdist.rg", "rgdist.measure")
    for m, p in modules().items():
        for target, _names, _top in imports(p, m):
            if target.split(".")[0] == "mpi4py":
                assert m == "rgdist.parallel.comm", m
            if target.split(".")[0] == "h5py":
                assert m.startswith("rgdist.io"), m
            if m.startswith(core):
                assert not target.startswith(("rgdist.campaign", "rgdist.io", "rgdist.parallel",
                                              "yaml", "h5py", "mpi4py")), (m, target)


def test_no_private_helper_imported_across_packages():
    bad = []
    for m, p in modules().items():
        here = m.split(".")[1] if "." in m else ""
        for target, names, _top in imports(p, m):
            if not target.startswith("rgdist."):
                continue
            there = target.split(".")[1]
            for n in names:
                if n.startswith("_") and not n.startswith("__") and there != here:
                    bad.append(f"{m} imports {target}.{n}")
    assert not bad, bad
