"""What every app's admin shares: the read-only base of pages whose rows only services write, and a money
column."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from cartflow.money import money_format


class ReadOnlyAdminMixin:
    """Staff may look, never add, change or delete: the services own these rows (saving a stale full row
    from a form would also overwrite version-checked state). Actions still call the services.

    Put it before ``admin.ModelAdmin`` or an inline class (``obj`` is optional, so it fits both)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def money_column(field: str, description: str) -> Callable[[Any, Any], str]:
    """A column (list or read-only field) showing the row's ``field`` with the row's ``currency``, "180.00 USD",
    that sorts by the amount itself: ``total_ = money_column("total", "total")``."""

    @admin.display(description=description, ordering=field)
    def column(model_admin: Any, obj: Any) -> str:
        return money_format(getattr(obj, field), obj.currency)

    return column
