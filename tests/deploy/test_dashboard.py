"""The "Expert routing" Grafana dashboard: valid JSON with the promised panels and variables, and
every metric (and label matcher) its PromQL uses is exported by a real running server."""

from __future__ import annotations

import re
import urllib.request

import yaml
from prometheus_client.parser import text_string_to_metric_families
from server_process import REPO_ROOT

METRIC = re.compile(r"\b(t2mir_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(t2mir_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"')
TARGET_LABELS = {"instance", "job", "replica"}
"""Labels Prometheus attaches to every scraped series (target labels), absent from /metrics."""

# panel title fragment -> metric its queries must use
REQUIRED_PANELS = {
    "Token-router expert use": "t2mir_expert_tokens_total",
    "Token-router expert share by modality": "t2mir_expert_tokens_total",
    "Task-router expert weights": "t2mir_task_expert_weight_total",
    "Soft-router expert weights": "t2mir_expert_weight_total",
    "Soft-router top-expert share": "t2mir_expert_top_total",
    "Soft-router token entropy": "t2mir_router_token_entropy",
    "Router load CV": "t2mir_router_load_cv",
    "Router entropy": "t2mir_router_entropy",
    "Act latency p50 / p95 / p99": "t2mir_act_latency_seconds_bucket",
    "Batch size distribution": "t2mir_batch_size_bucket",
    "Queue wait": "t2mir_queue_wait_seconds_bucket",
    "Sessions active": "t2mir_sessions_active",
    "KV cache hit rate": "t2mir_kv_cache_hits_total",
    "Store latency": "t2mir_store_latency_seconds_bucket",
    "Episode returns": "t2mir_episode_return_bucket",
    "Act requests by status": "t2mir_act_requests_total",
    "Queue depth": "t2mir_queue_depth",
    "Acts shed": "t2mir_acts_shed_total",
    "Decode reads in place": "t2mir_decode_reads_total",
}


def all_panels(dashboard: dict) -> list[dict]:
    """Panels, including those nested in collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression in the dashboard (panel targets and query variables)."""
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def test_dashboard_json_structure(dashboard):
    assert dashboard["uid"] == "t2mir-expert-routing"
    assert "Expert routing" in dashboard["title"]
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    cells = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_has_the_promised_panels(dashboard):
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    for fragment, metric in REQUIRED_PANELS.items():
        matching = [p for p in panels if fragment in p["title"]]
        assert matching, f"no panel titled like {fragment!r}"
        exprs = " ".join(t["expr"] for p in matching for t in p["targets"])
        assert metric in exprs, f"{fragment!r} does not query {metric}"
    latency = next(p for p in panels if p["title"].startswith("Act latency"))
    quantiles = sorted(
        re.findall(r"histogram_quantile\((0\.\d+)", " ".join(t["expr"] for t in latency["targets"]))
    )
    assert quantiles == ["0.5", "0.95", "0.99"]
    token = next(p for p in panels if p["title"].startswith("Token-router expert use"))
    assert token.get("repeat") == "layer", "one token-router panel per MoE layer"
    assert "by (modality, expert)" in token["targets"][0]["expr"]
    for fragment in ("Queue depth", "Acts shed"):
        overload = next(p for p in panels if fragment in p["title"])
        assert "by (model" in overload["targets"][0]["expr"], f"{fragment!r} is per model"


def test_dashboard_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for name in ("model", "layer"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"
    joined = " ".join(expressions(dashboard))
    assert 'model=~"$model"' in joined and 'layer=~"$layer"' in joined


def test_provisioned_datasource_is_prometheus(dashboard):
    provisioning = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    (source,) = yaml.safe_load(provisioning.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]


def scraped_series(url: str) -> dict[str, set[str]]:
    """sample name (with _total/_bucket/_sum/_count suffixes) -> label names, from a real /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_every_dashboard_metric_is_exported_by_a_running_server(dashboard, monitored):
    series = scraped_series(monitored.server.url)
    used = {m for expr in expressions(dashboard) for m in METRIC.findall(expr)}
    assert len(used) >= 15
    missing = sorted(used - set(series))
    assert not missing, f"dashboard queries series the server does not export: {missing}"
    for expr in expressions(dashboard):
        for metric, matchers in SELECTOR.findall(expr):
            labels = {name for name, _ in MATCHER.findall(matchers)}
            unknown = labels - series[metric] - TARGET_LABELS
            assert not unknown, f"{metric} has no label(s) {sorted(unknown)} (in {expr})"


def test_every_design_metric_is_on_the_dashboard(dashboard, monitored):
    """The reverse direction: nothing the server exports is left off the dashboard."""
    used = " ".join(expressions(dashboard))
    families = {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for name in scraped_series(monitored.server.url)
    }
    families = {f for f in families if f.startswith("t2mir_")}
    absent = sorted(f for f in families if f not in used)
    assert not absent, f"exported but not on the dashboard: {absent}"
