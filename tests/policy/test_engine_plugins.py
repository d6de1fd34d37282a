"""Issue 11, "engine parts": a metric is declared once (policy.registry) and a filter is a plugin.

A test-only metric (`temperature_c`, bounded by `max_temperature_c`, scored as
`thermal`) is declared in one place, a registry of its own, and shows up in
the policy language (rule, flat form, weight, scale, schema, did-you-mean),
the node records, the decision (rejections, summary, violations, components)
and the explain a user reads (JSON and the CLI's table). A test-only filter
plugin is added to a pipeline in one place and rejects with its own reason.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from hypercore.cli.render import print_decision
from hypercore.metrics import AgentMetrics
from hypercore.policy import (DEFAULT_PIPELINE, DEFAULT_REGISTRY, METRICS, Filter, Metric, NodeRecord, NodeTable,
                              PolicyError, Request, Scoring, decide, parse_node_records, parse_policy, policy_models)
from hypercore.policy.decision import COMPONENTS, Check
from hypercore.policy.model import RULE_KEYS
from hypercore.policy.node_columns import table_from_json

THERMAL = DEFAULT_REGISTRY.extended(
    Metric("temperature_c", "°C", "hottest sensor", maximum=150, rule="max_temperature_c",
           rule_doc="Hottest a node may run, in °C.", component="thermal", default_scale=100.0))

NODES = [
    {"name": "cool", "latency_ms": 10, "price_per_gb": 0.01, "reputation": 0.9, "queue_depth": 1, "temperature_c": 40},
    {"name": "warm", "latency_ms": 10, "price_per_gb": 0.01, "reputation": 0.9, "queue_depth": 1, "temperature_c": 60},
    {"name": "hot", "latency_ms": 5, "price_per_gb": 0.001, "reputation": 1.0, "queue_depth": 0, "temperature_c": 85},
    {"name": "quiet", "latency_ms": 5, "price_per_gb": 0.001, "reputation": 1.0, "queue_depth": 0},
]


def test_the_default_registry_is_the_one_list_of_metrics() -> None:
    names = DEFAULT_REGISTRY.names
    assert METRICS == names == ("latency_ms", "jitter_ms", "packet_loss", "price_per_gb", "reputation", "queue_depth")
    assert RULE_KEYS[1:] == tuple(m.rule for m in DEFAULT_REGISTRY.ruled)
    assert COMPONENTS == DEFAULT_REGISTRY.components == ("latency", "price", "reputation", "queue")
    assert [f for f in Scoring.model_fields if f.endswith("_weight")] == [f"{c}_weight" for c in COMPONENTS]
    assert set(names) <= set(NodeRecord.model_fields)
    assert set(AgentMetrics().beacon) == set(names)  # one beacon gauge per metric


def test_a_metric_declared_once_is_in_the_policy_language() -> None:
    models = policy_models(THERMAL)
    policy = parse_policy({"name": "cool-only", "max_temperature_c": 70, "scoring": {"thermal_weight": 1}},
                          registry=THERMAL)  # the flat form lifts the new rule too
    assert policy.rules.max_temperature_c == 70 and policy.scoring.weights() == (0, 0, 0, 0, 1)
    assert policy.scoring.scales.temperature_c == 100.0
    schema = models.policy.model_json_schema()
    assert "max_temperature_c" in schema["properties"]  # `policy schema` of such a build shows it
    with pytest.raises(PolicyError) as info:
        parse_policy({"rules": {"max_temperatur_c": 70}}, registry=THERMAL)
    assert "did you mean `max_temperature_c`?" in str(info.value)
    with pytest.raises(PolicyError) as info:
        parse_policy({"rules": {"max_temperature_c": 200}}, registry=THERMAL)
    assert "rules.max_temperature_c: 200 is not allowed: must be less than or equal to 150" in str(info.value)
    with pytest.raises(PolicyError):  # the default registry knows no such rule
        parse_policy({"rules": {"max_temperature_c": 70}})


def test_a_metric_declared_once_filters_scores_and_explains() -> None:
    policy = parse_policy({"name": "cool-only", "rules": {"max_temperature_c": 70},
                           "scoring": {"thermal_weight": 1, "latency_weight": 1}}, registry=THERMAL)
    with pytest.raises(PolicyError) as info:
        parse_node_records([{"name": "x", "temperature_c": "40"}], registry=THERMAL)
    assert '[0].temperature_c: "40" is not allowed: expected a number' in str(info.value)
    table = table_from_json(NODES, registry=THERMAL)
    slow = NodeTable.from_records(parse_node_records(NODES, registry=THERMAL), THERMAL)
    assert np.array_equal(table.columns["temperature_c"], slow.columns["temperature_c"], equal_nan=True)
    decision = decide(policy, table)
    assert [r.node for r in decision.ranked] == ["cool", "warm"]
    assert decision.ranked[0].components == pytest.approx(
        {"latency": 1 - 10 / 200, "price": 0, "reputation": 0, "queue": 0, "thermal": 1 - 40 / 100})
    assert {r.node: r.reasons for r in decision.rejected} == {
        "hot": ("temperature_c > 70 (is 85)",), "quiet": ("temperature_c unknown",)}
    assert decision.summary == "2/4 nodes match policy 'cool-only': 1 temperature_c > 70, 1 temperature_c unknown"
    assert decision.violations == {"max_temperature_c": 2}
    assert json.loads(json.dumps(decision.to_dict()))["ranked"][1]["components"]["thermal"] == pytest.approx(0.4)
    out = io.StringIO()
    print_decision(decision, Console(file=out, width=200))
    text = out.getvalue()
    assert "thermal" in text and "temperature_c > 70 (is 85)" in text and "0.6000" in text


class NoCanaries(Filter):
    """Test-only filter: nodes whose name starts with the request's `avoid_prefix` never rank."""

    name = "no_canaries"
    absolute = True
    uses_request_only = True

    def checks(self, prepared: Any, table: NodeTable, request: Request, enforce: bool) -> list[Check]:
        prefix = (request.extra or {}).get("avoid_prefix")
        if not prefix:
            return []
        mask = np.array([n.startswith(prefix) for n in table.names]) & table.alive
        return [Check._new("no_canaries", "canary node", None, mask, None, int(mask.sum()), None,
                           lambda i: f"canary node ({table.names[i]} starts with {prefix})")]


def test_a_filter_plugin_added_in_one_place_rejects_with_its_reason() -> None:
    pipeline = DEFAULT_PIPELINE.with_filter(NoCanaries())
    policy = parse_policy({"name": "loose", "mode": "permissive", "rules": {"max_latency_ms": 1}})
    nodes = [{"name": "canary-1", "latency_ms": 5}, {"name": "b", "latency_ms": 9}]
    request = Request(extra={"avoid_prefix": "canary-"})
    decision = decide(policy, nodes, pipeline=pipeline, request=request)
    # permissive fallback: the policy's rule gives way, the plugin's absolute check does not
    assert decision.fallback and [r.node for r in decision.ranked] == ["b"]
    assert {r.node: r.reasons for r in decision.rejected} == {
        "canary-1": ("latency_ms > 1 (is 5)", "canary node (canary-1 starts with canary-)"), "b": ("latency_ms > 1 (is 9)",)}
    assert "1 canary node" in decision.summary
    assert decide(policy, nodes).ranked.node_names == ["canary-1", "b"]  # the default pipeline has no such filter
