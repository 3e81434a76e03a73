"""JSON encoding for the hot paths (response bodies, jsonb columns, the audit chain): orjson, or
the standard library where orjson cannot (integers beyond 64 bits, keys that are not strings).

The bytes are the same either way for JSON without floats: compact separators, non-ASCII kept
as UTF-8, keys in insertion order or sorted (tests/shared/test_json_codec.py checks orjson
against `json.dumps` on generated documents).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(
    value: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    utc_z: bool = False,
) -> bytes:
    """Compact UTF-8 JSON. `utc_z` writes UTC datetimes with `Z` instead of `+00:00` (orjson
    writes datetimes and UUIDs itself; the fallback leaves them to `default`)."""
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_UTC_Z if utc_z else 0)
    try:
        return orjson.dumps(value, default=default, option=option)
    except TypeError:  # orjson.JSONEncodeError: out-of-range integer, non-string key, ...
        return json.dumps(
            value, default=default, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":")
        ).encode()


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # e.g. an integer beyond 64 bits; raises if not JSON at all
