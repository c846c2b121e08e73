"""Decoding request bodies and WebSocket messages: one set of rules for HTTP and WebSocket.

A body or message is decoded (JSON, or msgpack for binary WebSocket frames) and then checked as a
tree before any field is read: nesting deeper than `MAX_DEPTH` and strings that are not valid
Unicode (lone UTF-16 surrogates such as ``"\\ud800"``, which JSON escapes can express but UTF-8
cannot encode) are refused with 400. Nothing that fails here reaches the store, and nothing that
passes can later fail to be stored or encoded in an answer.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from server import json_codec
from server.errors import ApiError, from_pydantic

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a body, a message or session metadata."""


def decode_json(raw: bytes | str) -> Any:
    """Decode a JSON body or text frame and check it (`check_tree`); raises ApiError 400."""
    try:
        value = json_codec.loads(raw)
    except RecursionError as exc:
        raise _too_deep() from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from exc
    check_tree(value)
    return value


def decode_msgpack(raw: bytes) -> Any:
    """Decode a binary (msgpack) frame and check it (`check_tree`); raises ApiError 400."""
    try:
        value = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ApiError(400, "invalid_msgpack", "binary frame is not valid msgpack") from exc
    check_tree(value)
    return value


def validate_body(model: type[M], data: Any) -> M:
    """A decoded body -> ``model`` (it must be a JSON object); raises ApiError 422."""
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_pydantic(exc) from exc


def check_tree(value: Any) -> None:
    """Raise ApiError 400 if ``value`` nests deeper than `MAX_DEPTH` or holds a string (key or
    value) that is not valid Unicode. Iterative: safe on any depth."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str):
                        _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400, "invalid_unicode", "a string holds a lone UTF-16 surrogate (not valid Unicode)"
        ) from exc


def _too_deep() -> ApiError:
    return ApiError(400, "too_deep", f"arrays and objects nest deeper than {MAX_DEPTH} levels")
