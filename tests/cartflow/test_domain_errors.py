"""Each app's domain errors live in its ``errors.py``, one class per problem code of cartflow/problems.py."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from cartflow.problems import REGISTRY, DomainError

ROOT = Path(__file__).resolve().parents[2]
APPS = ("cart", "inventory", "orders")


def _error_classes() -> list[type[DomainError]]:
    classes = []
    for app in APPS:
        module = importlib.import_module(f"{app}.errors")
        classes += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, DomainError) and value.__module__ == module.__name__
        ]
    return classes


def test_every_error_class_carries_a_registered_code():
    unregistered = [
        f"{cls.__module__}.{cls.__name__}: {cls.code!r}" for cls in _error_classes() if cls.code not in REGISTRY
    ]
    assert not unregistered


def test_no_two_error_classes_share_a_code():
    by_code: dict[str, list[str]] = {}
    for cls in _error_classes():
        by_code.setdefault(cls.code, []).append(f"{cls.__module__}.{cls.__name__}")
    assert {code: names for code, names in by_code.items() if len(names) > 1} == {}


@pytest.mark.parametrize("app", APPS)
def test_domain_errors_are_defined_in_errors_py_only(app):
    """No ``class X(DomainError)`` outside the app's errors.py (read from the source)."""
    elsewhere = []
    for path in sorted((ROOT / app).rglob("*.py")):
        if path.name == "errors.py" or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(base).endswith("DomainError") for base in node.bases):
                elsewhere.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}")
    assert not elsewhere
