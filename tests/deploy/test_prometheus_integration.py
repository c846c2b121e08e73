"""A real Prometheus (Debian package) scrapes a real ``t2mir serve`` with the shipped job config
(scrape interval shortened to 1 s, target pointed at the test server); the dashboard's queries,
with the Grafana variables substituted, return data through Prometheus's HTTP API."""

from __future__ import annotations

import json
import math
import time

from server_process import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "expert-routing.json"
GRAFANA_VARIABLES = {
    "$__rate_interval": "10s",  # >= 4 scrapes at 1 s, as Grafana's own $__rate_interval would be
    "$__range": "5m",
    "$model": ".*",  # the variables' "All" value
    "$layer": ".*",
    "$instance": ".*",
}
# Queries that must not only exist but carry a positive number while traffic flows (and the act
# latency quantiles must be finite).
POSITIVE = (
    "t2mir_act_requests_total",
    "t2mir_expert_tokens_total",
    "t2mir_task_expert_weight_total",
    "t2mir_sessions_active",
    "t2mir_router_entropy",
)


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def has_data(expr: str, result: list[dict]) -> bool:
    """Non-empty; positive for the `POSITIVE` series; a finite act-latency quantile."""
    values = [float(r["value"][1]) for r in result]
    if "histogram_quantile" in expr:
        return bool(values) and ("act_latency" not in expr or any(math.isfinite(v) for v in values))
    if any(metric in expr for metric in POSITIVE):
        return any(v > 0 for v in values)
    return bool(values)


def test_prometheus_scrapes_the_server_and_answers_the_dashboard_queries(monitored, traffic):
    prometheus, server = monitored.prometheus, monitored.server
    queries = [(title, substitute(expr)) for title, expr in dashboard_queries()]
    assert len(queries) >= 20
    deadline = time.monotonic() + 30
    pending: dict[str, str] = {}
    round_ = 0
    while time.monotonic() < deadline:
        # Keep traffic flowing between scrapes so the rate() windows see increases.
        traffic(server.url, sessions=1, episodes=1, steps=3, seed=round_)
        round_ += 1
        time.sleep(0.5)
        pending = {expr: title for title, expr in queries if not has_data(expr, prometheus.query(expr))}
        if not pending:
            break
    assert not pending, "queries without data:\n" + "\n".join(f"{t}: {e}" for e, t in pending.items())
    up = prometheus.query('up{job="t2mir-server"}')
    assert [float(r["value"][1]) for r in up] == [1.0]


def test_grafana_variable_queries_have_values(monitored):
    prometheus = monitored.prometheus
    deadline = time.monotonic() + 15
    models = layers = []
    while time.monotonic() < deadline:
        models = prometheus.get("/api/v1/label/model/values", **{"match[]": "t2mir_model_info"})["data"]
        layers = prometheus.get(
            "/api/v1/label/layer/values", **{"match[]": 't2mir_router_load_cv{model=~".*"}'}
        )["data"]
        if models and layers:
            break
        time.sleep(0.5)
    assert models == ["darkroom-test", "m3dt-test"]
    assert layers == ["0", "1"]  # DarkRoom: MoE in its top block; M3DT: in both blocks
