"""DRF's JSON parser with a depth limit, so a hostile body is a 400 ``malformed_json``, never a 500.

Python's decoder recurses per nesting level: a body of 100,000 ``[`` raises ``RecursionError``, which is
no ``ValueError`` and so escapes DRF's own handling. Bodies the API reads are three levels deep at most,
so anything deeper than ``CARTFLOW_MAX_JSON_DEPTH`` is refused too, before a serializer walks it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONTooDeep(ParseError):
    pass


def _deeper_than(data: Any, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.CARTFLOW_MAX_JSON_DEPTH
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise JSONTooDeep(f"The JSON body is nested deeper than {limit} levels.") from None
        if _deeper_than(data, limit):
            raise JSONTooDeep(f"The JSON body is nested deeper than {limit} levels.")
        return data
