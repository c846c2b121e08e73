"""``default_model``: the model of sessions that name none when several models are loaded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.command import add_arguments, settings_from_args
from server.settings import ServerSettings


def _app(checkpoints, **settings):
    return create_app(ServerSettings(checkpoints=[str(c) for c in checkpoints], **settings))


def test_sessions_without_a_model_get_the_default(tiny_checkpoint, short_checkpoint):
    both = [tiny_checkpoint, short_checkpoint]
    with TestClient(_app(both, default_model="short-test")) as client:
        answer = client.post("/sessions", json={})
        assert answer.status_code == 201 and answer.json()["model"]["name"] == "short-test"
        named = client.post("/sessions", json={"model": "darkroom-test"})
        assert named.json()["model"]["name"] == "darkroom-test"
    with TestClient(_app(both)) as client:
        error = client.post("/sessions", json={}).json()["error"]
        assert (error["code"], error["field"]) == ("missing_field", "model")
        assert "default_model" in error["message"]


def test_a_default_that_is_not_loaded_stops_the_start(tiny_checkpoint):
    with (
        pytest.raises(ValueError, match="default_model 'nope'"),
        TestClient(_app([tiny_checkpoint], default_model="nope")),
    ):
        pass


def test_flag_and_environment(monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.setenv("T2MIR_DEFAULT_MODEL", "from-env")
    assert settings_from_args(parser.parse_args([])).default_model == "from-env"
    assert settings_from_args(parser.parse_args(["--default-model", "flag"])).default_model == "flag"
