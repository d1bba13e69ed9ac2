"""The import rules of ARCHITECTURE.md, checked on the source (ast), not by importing it.

* the core (backend, linalg, lowrank, orthonormal, truncation, operators, substeps, integrators, and errors,
  threads, cli)
  imports nothing from nn/, train/, ode/, data/ or experiments/;
* nn/ imports only the core; ode/ imports only the core (never nn/ or train/); data/ imports nothing
  else of the package; train/ imports the core, nn/ and data/ (never ode/ or experiments/);
* nothing imports experiments/ except experiments/ itself (its command lives there): no other
  package module, tutorial, benchmark or tool;
* cli.py, errors.py and threads.py import nothing that loads NumPy (``--threads`` must act first);
* imports sit at the top of a module, except the lazy imports of the optional CuPy and of matplotlib
  (loaded by the plotting code only);
* only backend.py reads an array type's ``__module__`` (NumPy or CuPy?);
* no two package modules share a name (as ``lowrank.py`` and ``nn/lowrank.py`` once did), except
  the commands' ``cli.py`` and ``errors.py`` (the commands' errors; ``nn/errors.py``: the layers').
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dlrt_ref"
AREAS = ("nn", "train", "ode", "data", "experiments")
CORE = ("backend", "linalg", "lowrank", "orthonormal", "truncation", "operators", "substeps", "integrators", "errors",
        "threads", "cli", "__init__", "__main__")
# what each part of the package may import from the package (besides itself)
ALLOWED = {"core": {"core"}, "nn": {"core"}, "ode": {"core"}, "data": set(), "train": {"core", "nn", "data"},
           "experiments": {"core", "nn", "ode", "data", "train"}}
LAZY_OK = ("cupy", "cupyx", "matplotlib", "dask")  # optional or slow dependencies, loaded on first use only


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


def _area(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 and rel[0] in AREAS else "core"


def _area_of_name(name: str):
    """The part of the package a dotted module name belongs to (None: not the package)."""
    parts = name.split(".")
    if parts[0] != "dlrt_ref":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in AREAS else "core"


def _imports(path: Path):
    """(module name, line, at module top?) for every import in ``path``; ``from X import Y`` also yields X.Y."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno, id(node) in top))
            out += [(f"{node.module}.{a.name}", node.lineno, id(node) in top) for a in node.names]
    return out


def test_each_part_imports_only_what_the_rules_allow():
    bad = []
    for path in _modules():
        me = _area(path)
        for name, line, _ in _imports(path):
            other = _area_of_name(name)
            if other is not None and other != me and other not in ALLOWED[me]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {name} ({other})")
    assert not bad, "\n".join(bad)


def test_nothing_outside_experiments_imports_them():
    bad = []
    others = [p for p in _modules() if _area(p) != "experiments"]
    for folder in ("tutorials", "benchmarks", "tools"):
        others += sorted((ROOT / folder).rglob("*.py"))
    for path in others:
        bad += [f"{path.relative_to(ROOT)}:{line}: {name}" for name, line, _ in _imports(path)
                if name == "dlrt_ref.experiments" or name.startswith("dlrt_ref.experiments.")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["cli", "errors", "threads"])
def test_dispatch_modules_load_no_numpy(module):
    """``--threads`` must be applied before NumPy loads, so these import only the standard library and each other."""
    allowed = {"dlrt_ref", "dlrt_ref.errors", "dlrt_ref.threads"}
    for name, line, _ in _imports(PKG / f"{module}.py"):
        root = name.split(".")[0]
        if root == "dlrt_ref":
            assert name.rsplit(".", 1)[0] in allowed or name in allowed, f"{module}.py:{line} imports {name}"
        else:
            assert root not in ("numpy", "scipy", "matplotlib", "cupy"), f"{module}.py:{line} imports {name}"


def test_imports_are_at_the_top():
    bad = []
    for path in _modules():
        for name, line, at_top in _imports(path):
            if not at_top and name.split(".")[0] not in LAZY_OK:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name} imported inside a function or block")
    assert not bad, "\n".join(bad)


def test_module_names_are_unique():
    seen = {}
    for path in _modules():
        if path.stem in ("__init__", "__main__", "cli", "errors"):
            continue
        seen.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, twice


def test_only_the_backend_tells_an_arrays_library():
    """``type(a).__module__`` (NumPy or CuPy?) is read in backend.py only (backend_name, is_array, array_module)."""
    readers = [str(p.relative_to(ROOT)) for p in _modules()
               if p.name != "backend.py" and "__module__" in p.read_text(encoding="utf-8")]
    assert not readers, readers
