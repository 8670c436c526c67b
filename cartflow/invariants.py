"""The registry behind `manage.py check_invariants`.

Each app declares its invariants in an ``invariants.py`` module with :func:`invariant`; a check returns
a list of human-readable violations (empty when the invariant holds). cartflow imports no app: the
command discovers the modules through Django's autodiscovery.
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils.module_loading import autodiscover_modules

Check = Callable[[], list[str]]
_CHECKS: dict[str, Check] = {}


def invariant(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        _CHECKS[name] = fn
        return fn

    return register


def run_all() -> dict[str, list[str]]:
    """Run every registered check: ``{name: [violation, ...]}``."""
    autodiscover_modules("invariants")
    return {name: check() for name, check in sorted(_CHECKS.items())}
