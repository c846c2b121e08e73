"""The protocol surface shared by server and client: one error-code table, one create schema, and
sync/async classes with the same methods."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from clients import (
    AsyncSession,
    AsyncT2MIRClient,
    Session,
    SyncWebSocketSession,
    T2MIRClient,
    WebSocketSession,
)
from clients.codes import ERROR_CODES
from clients.protocol import create_body
from server.errors import ApiError
from server.schemas import CreateSessionBody

ROOT = Path(__file__).resolve().parents[2]


def _literal_api_errors() -> list[tuple[str, int, str]]:
    """(where, status, code) of every ``ApiError(status, "code", ...)`` written in server/."""
    found = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApiError"):
                continue
            status, code = [*node.args, None, None][:2]
            if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", status.value, code.value))
    return found


def test_every_error_the_server_writes_is_in_the_table():
    raised = _literal_api_errors()
    assert len(raised) > 20
    wrong = [(where, status, code) for where, status, code in raised if ERROR_CODES.get(code) is None]
    wrong += [
        (where, status, code)
        for where, status, code in raised
        if code in ERROR_CODES and ERROR_CODES[code].status not in (None, status)
    ]
    assert not wrong, f"codes missing from clients/codes.py or sent with another status: {wrong}"


def test_api_error_refuses_codes_outside_the_table():
    with pytest.raises(ValueError, match="not in clients"):
        ApiError(409, "made_up", "x")
    with pytest.raises(ValueError, match="not in clients"):
        ApiError(400, "step_conflict", "x")  # the table says 409
    error = ApiError(503, "store_unavailable", "down", headers={"Retry-After": "2"})
    assert error.body()["error"]["retry_after"] == 2  # a field, not only the header


def test_table_rows_are_consistent():
    for code, row in ERROR_CODES.items():
        assert row.code == code and row.meaning
        assert row.retry == (row.status in (429, 503)), code


def test_client_create_options_match_the_server_schema():
    fields = set(CreateSessionBody.model_fields)
    for function in (create_body, T2MIRClient.create_session, AsyncT2MIRClient.create_session):
        params = set(inspect.signature(function).parameters) - {"self"}
        assert params == fields, f"{function.__qualname__}: {params ^ fields}"
    for function in (Session.create, AsyncSession.create):
        params = set(inspect.signature(function).parameters) - {"client", "websocket", "encoding"}
        assert params == fields, f"{function.__qualname__}: {params ^ fields}"


def _public(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


@pytest.mark.parametrize(
    ("sync", "async_"),
    [(T2MIRClient, AsyncT2MIRClient), (Session, AsyncSession), (SyncWebSocketSession, WebSocketSession)],
)
def test_sync_and_async_twins_have_the_same_methods(sync, async_):
    renamed = {"aclose": "close"}
    assert _public(sync) - {"connect"} == {renamed.get(n, n) for n in _public(async_)} - {"connect"}
    for name in _public(async_):
        sync_name = renamed.get(name, name)
        if name == "connect" or not hasattr(sync, sync_name):
            continue
        a, s = inspect.signature(getattr(async_, name)), inspect.signature(getattr(sync, sync_name))
        assert list(a.parameters) == list(s.parameters), name
