"""Server metrics: DESIGN.md names, private registries, routing aggregation from real engine output."""

from __future__ import annotations

import torch
from model_factory import tiny_policy
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import ACT_BATCH, ServerMetrics, observe_all
from t2mir_model import ActRequest, DecodeEngine, ReadCounts
from t2mir_model.history import SessionHistory

DESIGN_NAMES = {
    "t2mir_act_requests",
    "t2mir_act_latency_seconds",
    "t2mir_batch_size",
    "t2mir_queue_wait_seconds",
    "t2mir_sessions_active",
    "t2mir_kv_cache_hits",
    "t2mir_kv_cache_misses",
    "t2mir_kv_cache_slots_used",
    "t2mir_store_latency_seconds",
    "t2mir_episode_return",
    "t2mir_expert_tokens",
    "t2mir_task_expert_weight",
    "t2mir_expert_weight",
    "t2mir_expert_top",
    "t2mir_router_token_entropy",
    "t2mir_router_load_cv",
    "t2mir_router_entropy",
    "t2mir_model_info",
    "t2mir_queue_depth",
    "t2mir_acts_shed",
    "t2mir_decode_reads",
    "t2mir_decode_padding_rows",
    "t2mir_decode_moved_rows",
}


def families(metrics: ServerMetrics) -> dict[str, list]:
    """name -> samples, parsed by prometheus_client's own parser."""
    return {f.name: f.samples for f in text_string_to_metric_families(metrics.render().decode())}


def engine_output(steps: int = 3):
    policy = tiny_policy()
    engine = DecodeEngine(policy, num_slots=4)
    histories = [SessionHistory(), SessionHistory()]
    outputs = []
    for t in range(steps):
        for h in histories:
            if t == 0:
                h.observe(torch.randn(4))
            else:
                h.observe(torch.randn(4), 0.5, torch.tensor(1))
        outputs.append(engine.act([ActRequest(i, h, seed=t) for i, h in enumerate(histories)]))
    return policy, outputs


def test_exposition_has_exactly_the_design_names():
    metrics = ServerMetrics()
    reads = ReadCounts(in_place=7, gathered=2, padding_rows=3, moved_rows=4)
    metrics.bind(
        sessions_active=lambda: 3,
        slots_used=lambda: 2,
        queue_depths=lambda: {"m": 5},
        decode_reads=lambda: {"m": reads},
    )
    metrics.model_loaded("m", "1", "ad")
    metrics.act_shed("m")
    metrics.act_done(200, 0.004)
    metrics.act_done(409, 0.001)
    metrics.store_op("append", 0.0003)
    metrics.episode_closed("m", 42.0)
    _, outputs = engine_output()
    for out in outputs:
        metrics.record_engine_output("m", out, [0.001] * len(out.results))
    found = families(metrics)
    assert set(found) == DESIGN_NAMES
    sample = {s.name: s for s in found["t2mir_sessions_active"]}
    assert sample["t2mir_sessions_active"].value == 3
    statuses = {s.labels["status"]: s.value for s in found["t2mir_act_requests"] if s.name.endswith("_total")}
    assert statuses == {"200": 1.0, "409": 1.0}
    hits = [s.value for s in found["t2mir_kv_cache_hits"] if s.name.endswith("_total")]
    misses = [s.value for s in found["t2mir_kv_cache_misses"] if s.name.endswith("_total")]
    assert hits == [4.0] and misses == [2.0]  # 2 sessions: one rebuild each, then incremental
    assert [(s.labels, s.value) for s in found["t2mir_queue_depth"]] == [({"model": "m"}, 5.0)]
    shed = [(s.labels, s.value) for s in found["t2mir_acts_shed"] if s.name.endswith("_total")]
    assert shed == [({"model": "m"}, 1.0)]
    steps = {s.labels["read"]: s.value for s in found["t2mir_decode_reads"]}
    assert steps == {"in_place": 7.0, "gathered": 2.0}
    assert [s.value for s in found["t2mir_decode_padding_rows"]] == [3.0]
    assert [s.value for s in found["t2mir_decode_moved_rows"]] == [4.0]


def test_expert_counters_match_routing_and_labels_are_bounded():
    metrics = ServerMetrics()
    policy, outputs = engine_output()
    for out in outputs:
        metrics.record_engine_output("m", out, [0.0] * len(out.results))
    found = families(metrics)  # the scrape drains the queued statistics
    tokens = [s for s in found["t2mir_expert_tokens"] if s.name.endswith("_total")]
    assert {tuple(sorted(s.labels)) for s in tokens} == {("expert", "layer", "modality", "model", "router")}
    assert {s.labels["router"] for s in tokens} == {"token"}
    assert {s.labels["modality"] for s in tokens} <= {"s", "a", "r"}
    expected = sum(
        float(layer.token.counts.sum()) for out in outputs for forward in out.routing for layer in forward
    )
    assert sum(s.value for s in tokens) == expected
    top_k = policy.config.moe.token_top_k
    new_tokens = sum(out.new_tokens for out in outputs)
    layers = len(policy.config.moe.layer_indices(policy.config.n_layers))
    assert expected == top_k * new_tokens * layers
    weights = [s for s in found["t2mir_task_expert_weight"] if s.name.endswith("_total")]
    assert weights and sum(s.value for s in weights) > 0
    for name in ("t2mir_router_load_cv", "t2mir_router_entropy"):
        routers = {(s.labels["layer"], s.labels["router"]) for s in found[name]}
        assert {r for _, r in routers} == {"token", "task"}
    entropy = [s.value for s in found["t2mir_router_entropy"]]
    assert all(0.0 <= v <= 1.0 + 1e-6 for v in entropy)


def test_registries_are_private():
    a, b = ServerMetrics(), ServerMetrics()
    a.act_done(200, 0.01)
    samples = families(b)["t2mir_act_requests"]
    assert not [s for s in samples if s.name.endswith("_total")]


def _expert_totals(metrics: ServerMetrics) -> dict[tuple, float]:
    """Expert counters as read straight from the registry (no drain of queued statistics)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        if family.name in ("t2mir_expert_tokens", "t2mir_task_expert_weight")
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_queued_routing_statistics_add_up_to_the_per_call_sums():
    outputs = [out for _ in range(3) for out in engine_output(steps=6)[1]]  # 18 < ROUTING_BATCH calls
    queued, per_call = ServerMetrics(), ServerMetrics()
    for out in outputs:
        queued.record_engine_output("m", out, [0.0] * len(out.results))
        per_call.record_engine_output("m", out, [0.0] * len(out.results))
        per_call.drain_routing()  # summed one engine call at a time
    assert not _expert_totals(queued)  # nothing summed yet: the calls wait in the queue
    queued.render()  # a scrape drains the queue first
    got, want = _expert_totals(queued), _expert_totals(per_call)
    assert got.keys() == want.keys() and got
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-3 * max(1.0, abs(value)), key


def test_a_full_routing_queue_is_summed_without_a_scrape():
    from server.metrics import ROUTING_BATCH

    outputs = [out for _ in range(ROUTING_BATCH // 6 + 1) for out in engine_output(steps=6)[1]]
    outputs = outputs[:ROUTING_BATCH]
    metrics = ServerMetrics()
    for out in outputs[:-1]:
        metrics.record_engine_output("m", out, [0.0] * len(out.results))
    assert not _expert_totals(metrics)
    metrics.record_engine_output("m", outputs[-1], [0.0] * len(outputs[-1].results))
    totals = _expert_totals(metrics)
    expected = sum(
        float(layer.token.counts.sum()) for out in outputs for forward in out.routing for layer in forward
    )
    assert sum(v for (name, _), v in totals.items() if name == "t2mir_expert_tokens_total") == expected


def test_soft_router_series_sum_the_m3dt_routing():
    """An M3DT engine's soft routing: weight and top-expert counters per layer and expert equal the
    engine's own statistics summed; the shared gauges and the token entropy carry router="soft"."""
    from model_factory import m3dt_prompt, tiny_m3dt_config

    from t2mir_model import M3DTActRequest, M3DTEngine, M3DTPolicy, summarize_routing

    torch.manual_seed(0)
    engine = M3DTEngine(M3DTPolicy(tiny_m3dt_config()))
    prompt = m3dt_prompt(3, 2)
    histories = [SessionHistory(), SessionHistory()]
    metrics, outputs = ServerMetrics(), []
    for t in range(3):
        for h in histories:
            if t == 0:
                h.observe(torch.randn(3))
            else:
                h.observe(torch.randn(3), 0.5, torch.zeros(2))
        requests = [M3DTActRequest(i, h, prompt=prompt, target_return=5.0) for i, h in enumerate(histories)]
        outputs.append(engine.act(requests))
        metrics.record_engine_output("m3dt", outputs[-1], [0.0, 0.0])
    found = families(metrics)
    expected = summarize_routing(forward for out in outputs for forward in out.routing)
    for name, field in (("t2mir_expert_weight", "expert_weights"), ("t2mir_expert_top", "expert_top")):
        got = {
            (s.labels["layer"], s.labels["expert"]): s.value for s in found[name] if s.name.endswith("_total")
        }
        want = {
            (str(summary.layer), str(e)): value
            for summary in expected
            for e, value in enumerate(getattr(summary, field).tolist())
            if value
        }
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-3 for k in want), name
    for name in ("t2mir_router_entropy", "t2mir_router_load_cv", "t2mir_router_token_entropy"):
        routers = {s.labels["router"] for s in found[name]}
        layers = {s.labels["layer"] for s in found[name]}
        assert routers == {"soft"} and layers == {"0", "1"}, name
    entropy = [s.value for s in found["t2mir_router_token_entropy"]]
    assert all(0.0 < v <= 1.0 for v in entropy)


def test_observe_all_is_one_observe_per_amount():
    """The batched histogram update leaves the series exactly as one ``observe`` per amount."""
    amounts = [0.0, 0.0005, 0.0007, 0.001, 0.003, 0.02, 0.02, 4.9, 5.0, 7.5, 1e9]
    one_by_one, batched = ServerMetrics(), ServerMetrics()
    for amount in amounts:
        one_by_one.queue_wait.observe(amount)
    observe_all(batched.queue_wait, amounts)
    observe_all(batched.queue_wait, [])
    assert families(batched)["t2mir_queue_wait_seconds"] == families(one_by_one)["t2mir_queue_wait_seconds"]


def test_act_answers_are_added_in_batches_and_at_every_scrape():
    metrics = ServerMetrics()
    for i in range(ACT_BATCH + 3):
        metrics.act_done(200 if i % 2 else 503, 0.002)
    registry_total = metrics.registry.get_sample_value("t2mir_act_requests_total", {"status": "200"})
    assert registry_total == ACT_BATCH // 2  # the first ACT_BATCH answers, added at once
    statuses = {
        s.labels["status"]: s.value
        for s in families(metrics)["t2mir_act_requests"]
        if s.name.endswith("_total")
    }
    assert statuses == {"200": (ACT_BATCH + 3) // 2, "503": (ACT_BATCH + 4) // 2}
    latency = {s.name: s.value for s in families(metrics)["t2mir_act_latency_seconds"]}
    assert latency["t2mir_act_latency_seconds_count"] == ACT_BATCH + 3
