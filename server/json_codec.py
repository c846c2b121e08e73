"""JSON on the act path: orjson where its answer is the standard library's, the standard library
where the two could differ.

Decoding (`loads`) gives exactly what ``json.loads`` gives, or raises what it raises: orjson
refuses everything ``json`` refuses and more (``NaN`` literals, lone surrogates, byte-order marks,
other encodings, very deep nesting), and those inputs go to ``json``; the one input both accept
but read differently, an integer literal beyond 64 bits (orjson makes it a float), goes to
``json`` as well, recognised by a run of 19 or more digits.

Encoding (`dumps`) gives compact JSON (``separators=(",", ":")``) and refuses NaN and infinities
like ``json.dumps(..., allow_nan=False)``: orjson writes them as ``null``, so output holding a
``null`` is encoded again by ``json``, as is anything orjson refuses (non-string keys, integers
beyond 64 bits, lone surrogates, types it does not know; it also writes UUIDs and enums, which
``json`` refuses and nothing here encodes). Where both succeed the text may differ in
form (non-ASCII characters as UTF-8 or as ``\\u`` escapes, ``1e-7`` or ``1e-07``), never in the
value it decodes to.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def loads(raw: bytes | str) -> Any:
    """``json.loads(raw)``, through orjson where that gives the same value (module docstring)."""
    digits = _LONG_DIGITS_TEXT if isinstance(raw, str) else _LONG_DIGITS_BYTES
    if digits.search(raw) is None:  # type: ignore[arg-type]
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json decides: it may accept (NaN, BOM, UTF-16) or raise its own error
    return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value`` as UTF-8 bytes; raises like ``json.dumps(value, allow_nan=False)``
    (ValueError for NaN / infinities, TypeError for non-JSON types, RecursionError)."""
    try:
        out = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        out = b"null"  # let json decide
    if b"null" not in out:
        return out
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
