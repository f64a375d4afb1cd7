"""The layer rule, checked from the code's imports (docs/architecture.md).

    engines  <  stream  <  sinks  <  speechstream

A module may import its own package and the packages below it, never one above, and no
import circle may run through any set of modules.  Imports are read with ``ast`` from every
``.py`` file of the four packages, including imports inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency.  ``engines.api`` is the top of the
engines package, so nothing inside ``engines`` imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["engines", "stream", "sinks", "speechstream"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in LAYERS:
        for path in sorted((root / pkg).rglob("*.py")):
            out[_module_name(path, root)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports (a ``from X import y`` counts ``X.y`` when it is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for target in targets:
            # "import engines.api" depends on engines.api; an unknown dotted tail is an attribute
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = _modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            if RANK[dep.split(".")[0]] > RANK[mod.split(".")[0]]:
                bad.append(f"{mod} imports {dep} from a higher layer")
            if dep == "engines.api" and mod.startswith("engines."):
                bad.append(f"{mod} imports engines.api, the top of engines")
    return sorted(bad)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _package_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # A package's __init__ re-exporting its submodules is not a circle with them: Python
    # imports the package first either way.  Drop child -> parent-package edges for the cycle search.
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_from_a_higher_layer():
    assert layer_violations(import_graph()) == []


def test_no_import_circle():
    assert circles(_package_init_edges(import_graph())) == []


def test_the_rule_catches_a_bad_import(tmp_path):
    """The checks can fail: a deliberate upward import and a deliberate circle are both reported."""
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "engines" / "api.py").write_text("from engines import types\n")
    (tmp_path / "engines" / "types.py").write_text("from stream import graph\n")  # engines -> stream: upward
    (tmp_path / "stream" / "graph.py").write_text("from stream.node import Node\n")
    (tmp_path / "stream" / "node.py").write_text("def f():\n    from stream import graph\n")  # a lazy circle
    (tmp_path / "engines" / "hf.py").write_text("import engines.api\n")
    graph = import_graph(tmp_path)
    assert layer_violations(graph) == [
        "engines.hf imports engines.api, the top of engines",
        "engines.types imports stream.graph from a higher layer",
    ]
    assert circles(_package_init_edges(graph)) == [["stream.graph", "stream.node"]]


@pytest.mark.parametrize("pkg", LAYERS)
def test_every_layer_is_found(pkg):
    assert any(m == pkg or m.startswith(pkg + ".") for m in import_graph())
