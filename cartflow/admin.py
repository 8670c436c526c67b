"""What every app's admin shares: the read-only base of pages whose rows only services write."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


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
