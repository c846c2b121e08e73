"""Routing statistics summed per layer as plain data, equal to the per-forward statistics."""

from __future__ import annotations

import pytest
import torch
from model_factory import tiny_policy

from t2mir_model import MODALITIES, ActRequest, DecodeEngine, EngineOutput, SessionHistory, summarize_routing


def engine_outputs(steps: int = 3, **moe: object) -> list[EngineOutput]:
    """Two sessions acting together: one rebuild forward, then incremental ones."""
    engine = DecodeEngine(tiny_policy(**moe), num_slots=4)
    histories = [SessionHistory(), SessionHistory()]
    outputs = []
    for t in range(steps):
        for h in histories:
            h.observe(torch.randn(4), *(() if t == 0 else (0.5, torch.tensor(1))))
        outputs.append(engine.act([ActRequest(i, h) for i, h in enumerate(histories)]))
    return outputs


def test_summaries_are_the_per_forward_statistics_summed_per_layer():
    forwards = [forward for out in engine_outputs() for forward in out.routing]
    summaries = summarize_routing(forwards)
    assert [s.layer for s in summaries] == [0, 1]  # tiny policies put MoE in every block
    for summary in summaries:
        layers = [layer for forward in forwards for layer in forward if layer.layer == summary.layer]
        assert summary.modalities == MODALITIES
        assert summary.token_counts.dtype == torch.float32 and summary.token_counts.device.type == "cpu"
        torch.testing.assert_close(summary.token_counts, sum(layer.token.counts for layer in layers))
        torch.testing.assert_close(summary.task_weights, sum(layer.task.weights for layer in layers))
        assert set(summary.usage()) == {"token", "task"}
        torch.testing.assert_close(summary.usage()["token"], summary.token_counts.sum(0))


def test_a_layer_without_a_task_router_has_no_task_weights():
    (summary, *_) = summarize_routing(engine_outputs(steps=2, task_moe=False)[0].routing)
    assert summary.task_weights is None and set(summary.usage()) == {"token"}
    assert summary.token_counts.shape == (len(MODALITIES), 6)


@pytest.mark.parametrize("forwards", [[], [[]]])
def test_no_forwards_or_no_moe_layers_give_no_summaries(forwards):
    assert summarize_routing(forwards) == []
