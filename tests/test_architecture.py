"""The layout's rules, checked on the source (docs/architecture.md, "Layers"):

1. no import cycle among modules — imports inside functions and ``TYPE_CHECKING`` blocks count,
   and importing a module runs its packages' ``__init__`` first, so those count too;
2. no ring between the top-level folders, with physlearn/spec (and the error types,
   physlearn/errors.py) as their own bottom layer: spec < drivers < simulators < calibration <
   the rest of physlearn/;
3. spec/ and estimators/ never import systems/, training/, simulators/ or drivers/ (estimators
   work on any level through the `PhysicalSystem` interface; the vocabulary imports nothing
   above it);
4. no class over 600 lines and no function over 80 lines in any of the four code folders.

Modules are found through pyproject.toml's package-dir mapping (physlearn.drivers lives in
drivers/, and so on)."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 80
#: The top-level layers, bottom first; a layer may import only itself and layers before it.
LAYERS = ("spec", "drivers", "simulators", "calibration", "physlearn")
FORBIDDEN = {
    "physlearn.spec": ("systems", "training", "simulators", "drivers"),
    "physlearn.estimators": ("systems", "training", "simulators", "drivers"),
}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)


def _package_dirs() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / d for pkg, d in cfg["package-dir"].items()}


def discover() -> dict[str, Module]:
    """Every module of the import root, named as Python imports it."""
    dirs = _package_dirs()
    mapped = {d.resolve() for d in dirs.values()}
    modules: dict[str, Module] = {}
    for pkg, base in dirs.items():
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            # a folder mapped to its own package is not also a sub-package of another
            if any(
                (base / Path(*parts[: i + 1])).resolve() in mapped for i in range(len(parts) - 1)
            ):
                continue
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            modules[name] = Module(name, path, is_pkg)
    return modules


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    if not mod.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The deepest module of the import root that ``name`` names (or is inside)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _with_packages(target: str, importer: str, modules: dict[str, Module]) -> set[str]:
    """Importing ``target`` runs the ``__init__`` of every package above it first (those that
    are not packages of the importer itself, which are already being imported)."""
    out = {target}
    parts = target.split(".")
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in modules and not (importer == pkg or importer.startswith(pkg + ".")):
            out.add(pkg)
    return out


def import_graph() -> dict[str, Module]:
    modules = discover()
    for mod in modules.values():
        tree = ast.parse(mod.path.read_text(), filename=str(mod.path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(mod, node)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for t in targets:
                k = _known(t, modules)
                if k is not None and k != mod.name:
                    mod.imports |= _with_packages(k, mod.name, modules) - {mod.name}
    return modules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def layer(name: str) -> str:
    parts = name.split(".")
    if name == "physlearn.errors" or parts[:2] == ["physlearn", "spec"]:
        return "spec"
    if len(parts) > 1 and parts[1] in ("drivers", "simulators", "calibration"):
        return parts[1]
    return "physlearn"


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return import_graph()


def test_the_graph_sees_every_folder(modules: dict[str, Module]) -> None:
    """The walk finds the modules of all four folders and their imports (else it proves nothing)."""
    assert {layer(n) for n in modules} == set(LAYERS)
    assert "physlearn.drivers.transport" in modules["physlearn.drivers.scpi_instrument"].imports
    assert "physlearn.spec.network" in modules["physlearn.simulators.excitation"].imports


def test_no_import_cycle(modules: dict[str, Module]) -> None:
    found = cycles({n: m.imports for n, m in modules.items()})
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_no_ring_between_folders(modules: dict[str, Module]) -> None:
    """Every import between folders goes down the layers (spec < drivers < simulators <
    calibration < physlearn)."""
    upward = sorted(
        f"{n} → {t}"
        for n, m in modules.items()
        for t in m.imports
        if LAYERS.index(layer(t)) > LAYERS.index(layer(n))
    )
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_spec_and_estimators_import_no_level(modules: dict[str, Module]) -> None:
    bad = []
    for n, m in modules.items():
        for prefix, banned in FORBIDDEN.items():
            if n == prefix or n.startswith(prefix + "."):
                bad += [
                    f"{n} → {t}"
                    for t in m.imports
                    if any(t == f"physlearn.{b}" or t.startswith(f"physlearn.{b}.") for b in banned)
                ]
    assert not bad, "\n".join(sorted(bad))


def test_no_oversized_class_or_function(modules: dict[str, Module]) -> None:
    big = []
    for m in modules.values():
        for node in ast.walk(ast.parse(m.path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                n_lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if n_lines > limit:
                    rel = m.path.relative_to(ROOT)
                    big.append(f"{rel}:{node.lineno} {node.name}: {n_lines} lines > {limit}")
    assert not big, "\n".join(sorted(big))


def test_the_checks_catch_what_they_forbid() -> None:
    """The rules fail on a cycle, a ring and a long function (so a pass means something)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer("physlearn.spec.network") == "spec" and layer("physlearn.errors") == "spec"
    assert layer("physlearn.drivers.registry") == "drivers"
    assert layer("physlearn.training.loop") == "physlearn"
    src = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    fn = ast.parse(src).body[0]
    assert isinstance(fn, ast.FunctionDef) and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
