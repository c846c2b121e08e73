"""The OpenAPI document: what the routes declare, and the pass that makes it match the answers.

Routes declare their error statuses with `errors` and bodies they decode themselves with
`json_body`. `install_openapi` makes every error response (declared or added by FastAPI) use the
one error schema (``#/components/schemas/Error``, see `server.errors`) and drops FastAPI's
default validation-error response and schemas, which this server never sends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}

_DESCRIPTIONS = {
    400: "Body is not valid JSON, nests too deep or holds invalid Unicode",
    401: "Missing or invalid API key",
    404: "Unknown session (or one of another API key) or model",
    408: "Body not received within the body timeout",
    409: "Step out of order (``expected_step``), session exists, or model version not loaded",
    413: "Body too large",
    422: "Invalid field, observation, reward or metadata",
    503: "Session store unreachable, too many sessions or shutting down (see Retry-After)",
}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses (the error schema is set by
    `install_openapi`)."""
    return {c: {"description": _DESCRIPTIONS.get(c, "Error")} for c in codes}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body that the route decodes itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Build ``app``'s OpenAPI document once, with the error schema on every error response."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = with_error_schema(hoist_body_definitions(document))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def hoist_body_definitions(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the nested models of `json_body` request schemas (their ``$defs``) moved to
    ``components/schemas``, where their ``$ref`` points (a reference into an inline schema's own
    ``$defs`` would not resolve against the document)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                schemas.update(media.get("schema", {}).pop("$defs", {}))
    return document


def with_error_schema(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with FastAPI's default 422 removed and every 4xx/5xx answering the error
    schema as JSON."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for status in list(responses):
                response = responses[status]
                if response.get("description") == "Validation Error":
                    del responses[status]
                elif int(status) >= 400:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    return document
