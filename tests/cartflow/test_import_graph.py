"""The import graph of the project package and the apps, read from the source (ast), nothing imported.

Two rules (docs/architecture.md, "Dependency rules"):

- no import cycle between modules of ``cartflow``, ``cart``, ``inventory``, ``orders`` and ``payments``
  (migrations aside). Every import counts, a function-level one too: an import moved into a function to
  dodge a cycle leaves the cycle in the design;
- a function-level import says why beside it: a comment on the same line, or on the line above (one
  comment may head a block of imports that follow each other).

Each rule is checked once per package, so a failure names the package it belongs to.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cartflow", "cart", "inventory", "orders", "payments")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    comments: dict[int, str]  # line → comment text (without the '#')


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            source = path.read_text()
            comments = {
                tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT
            }
            found[".".join(parts)] = Module(".".join(parts), path, ast.parse(source, str(path)), comments)
    return found


def _imported_names(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _known(name: str) -> str | None:
    """The project module a dotted name lives in (``inventory.errors.SoldOut`` → ``inventory.errors``)."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def graph() -> dict[str, dict[str, int]]:
    """module → {imported project module: line of the first such import}."""
    edges: dict[str, dict[str, int]] = {name: {} for name in modules()}
    for name, module in modules().items():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for imported in _imported_names(module, node):
                    target = _known(imported)
                    if target is not None and target != name:
                        edges[name][target] = min(node.lineno, edges[name].get(target, node.lineno))
    return edges


def _strongly_connected() -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are cycles."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _shortest_cycle(component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module, as a path that returns to its start."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph()[node]):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start} in {component}")


def _describe(cycle: list[str]) -> str:
    steps = [cycle[0]]
    for here, there in zip(cycle, cycle[1:], strict=False):
        steps.append(f"{there} (imported at {modules()[here].path.relative_to(ROOT)}:{graph()[here][there]})")
    return " → ".join(steps)


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_runs_through(package):
    """No module of the package is part of an import cycle (the cycle is printed module by module)."""
    cycles = [
        f"among {', '.join(component)}: {_describe(_shortest_cycle(component))}"
        for component in _strongly_connected()
        if any(_in_package(name, package) for name in component)
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


_NOT_A_REASON = re.compile(r"^(noqa(:\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(\[[^\]]*\])?)\s*[-:—]?\s*")


def _is_reason(comment: str | None) -> bool:
    """A comment that says something: a bare ``noqa`` or ``type: ignore`` is not a reason."""
    if comment is None:
        return False
    return len(re.findall(r"[A-Za-z]{2,}", _NOT_A_REASON.sub("", comment))) >= 2


def _function_level_imports(module: Module) -> list[tuple[ast.stmt, list[ast.stmt]]]:
    """(import statement, the statement list it is in) for every import inside a function."""
    found = []
    for function in ast.walk(module.tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                found += [(stmt, block) for stmt in block if isinstance(stmt, ast.Import | ast.ImportFrom)]
    return list({id(stmt): (stmt, block) for stmt, block in found}.values())


def _has_reason(module: Module, stmt: ast.stmt, block: list[ast.stmt]) -> bool:
    end = stmt.end_lineno or stmt.lineno
    if any(_is_reason(module.comments.get(line)) for line in range(stmt.lineno, end + 1)):
        return True
    if _is_reason(module.comments.get(stmt.lineno - 1)):
        return True
    position = next(i for i, other in enumerate(block) if other is stmt)
    previous = block[position - 1] if position else None
    # A block of imports, one after the other, may share the reason above its first import.
    if isinstance(previous, ast.Import | ast.ImportFrom) and (previous.end_lineno or 0) == stmt.lineno - 1:
        return _has_reason(module, previous, block)
    return False


@pytest.mark.parametrize("package", PACKAGES)
def test_function_level_imports_say_why(package):
    """Every import inside a function of the package has a reason in a comment beside it."""
    bare = [
        f"{module.path.relative_to(ROOT)}:{stmt.lineno}: {ast.unparse(stmt)}"
        for name, module in sorted(modules().items())
        if _in_package(name, package)
        for stmt, block in _function_level_imports(module)
        if not _has_reason(module, stmt, block)
    ]
    assert not bare, "function-level imports without a reason beside them:\n" + "\n".join(bare)


def test_the_graph_sees_the_imports():
    """The parser resolves ``import x``, ``from x import name`` and ``from package import module`` to modules,
    and leaves migrations out."""
    edges = graph()
    assert "cartflow.problems" in edges["inventory.errors"]
    assert "inventory.flashsale_keys" in edges["inventory.flashsale_metrics"]
    assert "inventory.selectors" in edges["cart.services"]
    assert "orders.migrations" not in " ".join(edges)
