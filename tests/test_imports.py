"""No import cycles among i3d_jax's modules.

A cycle works or breaks depending on which module a user imports first, and
it hides layering mistakes (a library module reaching back into a command).
Imports are read with `ast`, at any depth: one inside a function closes a
cycle as surely as one at the top, only later. Importing a submodule also
runs its package's `__init__`, but that is not counted as an edge: every
package that exports its submodules would otherwise be a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "i3d_jax"


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module under the package `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(tree: ast.AST, module: str, is_package: bool, known) -> set[str]:
    """The modules of `known` that `tree` (the source of `module`) imports,
    anywhere in it, or names in a string (exactly, as `importlib` takes it)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from mod import name` the module.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A module named in a string is one imported by name
            # (`importlib.import_module`, a tuple of command modules).
            found.add(node.value)
    return {name for name in found if name in known and name != module}


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package modules it imports} for the package at `root`."""
    modules = module_names(root)
    return {
        name: imported_modules(
            ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", modules
        )
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) through each strongly connected group of
    modules that has one (Tarjan's algorithm, then a path inside the group)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph, group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module, by breadth-first search."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for succ in sorted(graph[node] & group):
                if succ == start:
                    return paths[node] + [start]
                if succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    next_frontier.append(succ)
        frontier = next_frontier
    raise AssertionError(f"{sorted(group)} is strongly connected but has no cycle")


def _write(root: Path, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_detector_finds_cycles_at_any_depth_and_ignores_package_parents(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "from pkg import a\n",
        "a.py": "from pkg.sub import b\n",               # a -> pkg.sub.b
        "sub/__init__.py": "from . import b\n",          # pkg.sub -> b: not a cycle with b's parent
        "sub/b.py": "def f():\n    from ..c import g\n",  # b -> c, inside a function
        "c.py": "import importlib\nimportlib.import_module('pkg.a')\ndef g(): pass\n",  # c -> a
        "leaf.py": "import os\nfrom pkg import leaf\n",  # a self-import is no cycle
    })
    graph = import_graph(root)
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.sub.b"} and graph["pkg.leaf"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (root / "c.py").write_text("def g(): pass\n")
    assert cycles(import_graph(root)) == []


def test_i3d_jax_has_no_import_cycle():
    graph = import_graph(PACKAGE_ROOT)
    assert "i3d_jax.cli" in graph and "i3d_jax.convert.tf_slim" in graph
    found = cycles(graph)
    if found:
        pytest.fail("import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found))
