"""The shape of the code (issue 13): no import circle between msrpd's modules (imports under
TYPE_CHECKING and inside functions count too), no module over MAX_LINES lines, no class with
more than MAX_ATTRIBUTES attributes, and no per-frame state parked on shared objects
(`current_*` fields)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "msrpd"
MAX_LINES = 400
MAX_ATTRIBUTES = 15


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every msrpd module `name` imports, wherever the import statement stands."""
    package = _package(name, path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from .pkg import mod` imports the module pkg.mod when there is one.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    graph = {name: set(_imports(name, path)) for name, path in MODULES.items()}
    # A package's __init__ importing its own modules is how packages are built, not a circle.
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _attributes(cls: ast.ClassDef) -> set[str]:
    """Class-level annotated fields (dataclasses, NamedTuples) and `self.x = ...` targets."""
    names = set()
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if (
                    isinstance(leaf, ast.Attribute)
                    and isinstance(leaf.value, ast.Name)
                    and leaf.value.id == "self"
                ):
                    names.add(leaf.attr)
    return names


def _classes() -> Iterator[tuple[str, ast.ClassDef]]:
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                yield f"{name}.{node.name}", node


def test_the_check_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_is_real() -> None:
    graph = _graph()
    assert "msrpd.protocol.reader" in graph["msrpd.workers.conn"] or any(
        "msrpd.protocol" in target for target in graph["msrpd.workers.conn"]
    )
    assert len(MODULES) > 50


def test_no_import_circle() -> None:
    assert _circles(_graph()) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_the_line_limit(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_no_class_with_too_many_attributes() -> None:
    big = {
        name: len(attrs)
        for name, cls in _classes()
        if len(attrs := _attributes(cls)) > MAX_ATTRIBUTES
    }
    assert big == {}


def test_no_per_frame_state_on_shared_objects() -> None:
    parked = sorted(
        f"{name}.{attr}"
        for name, cls in _classes()
        for attr in _attributes(cls)
        if attr.startswith("current_")
    )
    assert parked == []
