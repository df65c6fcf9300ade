"""The package's modules import one another without cycles.

Every import statement counts, at any depth: module level, inside functions
(a lazy import is still a dependency) and under ``TYPE_CHECKING`` (a cycle of
types is a cycle of design). ``from package import name`` depends on the
package's ``__init__`` unless ``name`` is a submodule. A module importing its
own parent package implicitly, as Python does before running it, is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sloguard

SOURCE = Path(sloguard.__file__).resolve().parent
ROOT = SOURCE.parent

KNOWN_CYCLES: frozenset[tuple[str, str]] = frozenset({})
"""Edges ``(importer, imported)`` left out of the check until their cycle is opened."""


def module_names(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package under ``source``, by dotted name."""
    modules = {}
    for path in sorted(source.rglob("*.py")):
        parts = path.relative_to(source.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (the file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = {f"{target}.{alias.name}" for alias in node.names}
            found |= names & modules.keys()
            if not names <= modules.keys():
                found.add(target)  # names defined in the module (or package) itself
    owners = {_owner(dotted, modules) for dotted in found}
    return owners - {"", name}


def _owner(dotted: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``dotted`` that is one of ``modules`` ('' if none: not ours)."""
    while dotted and dotted not in modules:
        dotted = dotted.rpartition(".")[0]
    return dotted


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Each module of the package, and the modules of the package it imports."""
    modules = module_names(source)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None if it is acyclic."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for child in sorted(graph.get(node, ())):
            if child in on_path:
                return [*path[path.index(child) :], child]
            if child not in done:
                cycle = visit(child)
                if cycle is not None:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    for importer, imported in KNOWN_CYCLES:
        graph[importer].discard(imported)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_known_cycles_are_still_edges() -> None:
    """An exception that no longer applies is removed, so it cannot hide a new cycle."""
    graph = import_graph()
    assert all(imported in graph[importer] for importer, imported in KNOWN_CYCLES)


def test_the_graph_sees_lazy_relative_and_submodule_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.a import A\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from ..a import f\nfrom . import c\nimport os\n")
    (package / "sub" / "c.py").write_text("from pkg import A\nfrom pkg.sub.b import f\n")
    graph = import_graph(package)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.a", "pkg.sub.c"},
        "pkg.sub.c": {"pkg", "pkg.sub.b"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_a_cycle_is_found_and_named() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
