"""The serving process's collector settings (`server.collector`) and when `create_app` applies them."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from server.app import create_app
from server.collector import YOUNG_THRESHOLD, tune_collector
from server.settings import ServerSettings


def test_tune_collector_freezes_what_is_alive_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        kept = [object() for _ in range(10)]  # alive now: frozen, so no collection walks them again
        tune_collector()
        assert gc.get_freeze_count() > len(kept)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles made afterwards are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_on_ready_runs_once_the_models_are_loaded_and_before_requests(tiny_checkpoint):
    seen: list[bool] = []
    app = create_app(
        ServerSettings(checkpoints=[str(tiny_checkpoint)]),
        on_ready=lambda: seen.append(app.state.ctx.registry.ready),
    )
    with TestClient(app) as client:
        assert seen == [True]
        assert client.get("/readyz").status_code == 200
    assert seen == [True]
