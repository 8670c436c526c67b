"""Decode Stripe's form encoding (``metadata[order_id]=1``, ``expand[0]=x``, ``expand[]=x``) into nested values."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def parse_form(raw: bytes | str) -> dict[str, Any]:
    """Parse an ``application/x-www-form-urlencoded`` body or query string the way Stripe's API reads it."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if not match:
            root[key] = value
            continue
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # expand[]=x appends
                part = str(sum(1 for k in node if k.isdigit()))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _listify(value: Any) -> Any:
    """Turn dicts whose keys are all array indices into lists, recursively."""
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def as_bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
