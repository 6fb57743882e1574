"""The package's map (docs/architecture.md) as tests: rooms, layers, no import cycles, sizes.

The import graph is read from the source (``ast``), lazy imports inside functions included;
only imports under ``if TYPE_CHECKING:`` (annotations, never executed) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "reparam_zoo"

#: rooms bottom-up: a module may import its own room and the rooms below it, never one above
LAYERS = [
    {"errors", "registry", "stats", "outputs"},  # core: dependency-free helpers
    {"spec"},
    {"engine"},
    {"interop"},
    {"bench"},
    {"search"},
    {"cli"},
]
FACADES = {"reparam_zoo", "reparam_zoo.__main__"}  # the public API and `python -m`: import anything


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, inner.end_lineno + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the reparam_zoo modules it imports (a name imported from a package that is a
    submodule counts as that submodule)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "reparam_zoo")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "reparam_zoo":
                    continue
                deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files)
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(mod: str) -> int:
    room = _room(mod)
    return next(i for i, rooms in enumerate(LAYERS) if room in rooms)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_imports_and_ignores_type_checking(tmp_path):
    src = tmp_path / "reparam_zoo"
    (src / "engine").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "engine" / "__init__.py").write_text("")
    (src / "engine" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from reparam_zoo.engine import c\n"
        "def f():\n    from reparam_zoo.engine import b\n")
    (src / "engine" / "b.py").write_text("from . import a\n")
    (src / "engine" / "c.py").write_text("")
    globals_backup = (globals()["ROOT"], globals()["PKG"])
    globals()["ROOT"], globals()["PKG"] = tmp_path, src
    try:
        graph = import_graph()
    finally:
        globals()["ROOT"], globals()["PKG"] = globals_backup
    # the package itself counts: importing a submodule runs the package's __init__ first
    assert graph["reparam_zoo.engine.a"] == {"reparam_zoo.engine", "reparam_zoo.engine.b"}
    assert graph["reparam_zoo.engine.b"] == {"reparam_zoo.engine", "reparam_zoo.engine.a"}
    assert find_cycle(graph) == ["reparam_zoo.engine.a", "reparam_zoo.engine.b", "reparam_zoo.engine.a"]


def test_rooms_import_only_downwards():
    bad = []
    for mod, deps in import_graph().items():
        if mod in FACADES:
            continue
        for dep in deps:
            if dep in FACADES:  # the facade imports every room: only the top room (cli) may use it
                if _room(mod) != "cli":
                    bad.append(f"{mod} imports the package facade (import the module that defines the name)")
            elif _layer(dep) > _layer(mod):
                bad.append(f"{mod} imports {dep} ({_room(dep)} is above {_room(mod) or 'core'})")
    assert not bad, "\n".join(sorted(bad))


def test_no_private_name_crosses_a_module():
    bad = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reparam_zoo"):
                bad += [f"{_module_name(path)}: {a.name} from {node.module}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("reparam_zoo") and any(p.startswith("_") for p in module.split(".")):
                bad.append(f"{_module_name(path)}: imports the private module {node.module}")
    assert not bad, "\n".join(sorted(bad))


def test_package_size_limits():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 12, f"Expected at most 12 modules directly in reparam_zoo/ but got {len(top)}: {top}"
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


@pytest.mark.parametrize("room", ["engine", "spec", "interop", "bench", "search", "cli"])
def test_every_room_is_on_the_map(room):
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert f"`reparam_zoo/{room}/`" in doc
    for path in sorted((PKG / room).rglob("*.py")):
        rel = path.relative_to(PKG / room)
        if path.name == "__init__.py":
            continue
        name = str(rel.with_suffix("")) if len(rel.parts) == 1 else str(rel.parts[0]) + "/"
        assert f"`{name}`" in doc, f"docs/architecture.md does not mention {room}/{name}"


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in PKG.rglob("__init__.py")} | {"reparam_zoo.specs"}
    assert listed == found


def test_every_check_measures_with_the_one_relative_error():
    import re

    users = ["engine/verify.py", "interop/export.py", "interop/adopt/build.py", "interop/deployed.py"]
    for rel in users:  # verify, export, adopt, and convert + expand (their library side)
        assert "relative_error(" in (PKG / rel).read_text(), rel
    # nobody divides by a max |tensor| of their own: that is relative_error's job
    ratio = re.compile(r"/\s*(?:max\(\s*)?[\w.()]+\.abs\(\)\.max\(\)")
    bad = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
           if p.name != "verify.py" and ratio.search(p.read_text())]
    assert not bad, f"relative errors computed outside engine/verify.relative_error: {bad}"
