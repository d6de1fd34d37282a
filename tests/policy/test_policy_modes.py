"""Enforce vs permissive, fallback, non-alive nodes, missing metrics, workload capabilities."""

from __future__ import annotations

import pytest

from hypercore.policy import NoQualifyingNode, decide, decide_or_raise, parse_policy

NON_ALIVE = ["failed", "left", "suspect", "leaving", ""]


def cluster(node):
    return [
        node("fast", latency_ms=10, price_per_gb=0.04, reputation=0.99, queue_depth=1),
        node("mid", latency_ms=60, price_per_gb=0.02, reputation=0.9, queue_depth=5),
        node("slow", latency_ms=140, price_per_gb=0.006, reputation=0.6, queue_depth=12),
    ]


# --------------------------------------------------------------------------- enforce


def test_enforce_ranks_only_passing(node):
    policy = parse_policy({"name": "e", "rules": {"max_latency_ms": 100}})
    d = decide(policy, cluster(node))
    assert d.mode == "enforce"
    assert sorted(d.ranked.node_names) == ["fast", "mid"]
    assert [r.node for r in d.rejected] == ["slow"]
    assert not d.fallback


def test_enforce_none_pass_decide_or_raise_carries_decision(node):
    policy = parse_policy({"name": "e", "rules": {"max_latency_ms": 5}})
    with pytest.raises(NoQualifyingNode) as info:
        decide_or_raise(policy, cluster(node))
    decision = info.value.decision
    assert decision.policy == "e"
    assert len(decision.ranked) == 0
    assert not decision.fallback
    assert [r.node for r in decision.rejected] == ["fast", "mid", "slow"]
    assert decision.summary == "0/3 nodes match policy 'e': 3 latency_ms > 5"
    assert str(info.value) == decision.summary


def test_decide_does_not_raise_when_none_pass(node):
    d = decide(parse_policy({"rules": {"max_latency_ms": 5}}), cluster(node))
    assert len(d.ranked) == 0 and d.top is None


def test_decide_or_raise_returns_decision_when_something_ranks(node):
    d = decide_or_raise(parse_policy({"rules": {"max_latency_ms": 100}}), cluster(node))
    assert d.top is not None and d.top.node in {"fast", "mid"}


def test_decide_or_raise_with_empty_cluster(node):
    with pytest.raises(NoQualifyingNode) as info:
        decide_or_raise(parse_policy({"name": "x"}), [])
    assert info.value.decision.summary == "0/0 nodes match policy 'x'"


# --------------------------------------------------------------------------- permissive


def test_permissive_with_passing_nodes_puts_them_first_and_is_not_fallback(node):
    policy = parse_policy({"name": "p", "mode": "permissive", "rules": {"max_latency_ms": 100}})
    d = decide(policy, cluster(node))
    assert not d.fallback
    passing = {"fast", "mid"}
    names = d.ranked.node_names
    assert set(names[: len(passing)]) == passing
    # whatever else is ranked comes after every passing node
    assert all(n in passing for n in names[: len(passing)])
    assert [r.node for r in d.rejected] == ["slow"]
    assert d.summary == "2/3 nodes match policy 'p': 1 latency_ms > 100"


def test_permissive_fallback_ranks_every_alive_node(node):
    policy = parse_policy({"name": "p", "mode": "permissive", "rules": {"max_latency_ms": 5}})
    nodes = cluster(node) + [node("dead", "failed", latency_ms=1, price_per_gb=0.001, reputation=1.0, queue_depth=0)]
    d = decide(policy, nodes)
    assert d.fallback
    assert sorted(d.ranked.node_names) == ["fast", "mid", "slow"]
    assert d.summary == (
        "0/4 nodes match policy 'p': 3 latency_ms > 5, 1 not alive; permissive fallback: ranking all 3 alive nodes"
    )
    # fallback still ranks by the policy's scores (default 0.25 weights, fixed scales)
    scores = {r.node: r.score for r in d.ranked}
    # fast: 0.25*((1-10/200) + (1-0.04) + 0.99 + (1-1/100)) = 0.25*3.9
    assert scores["fast"] == pytest.approx(0.25 * (0.95 + 0.96 + 0.99 + 0.99), rel=1e-12)
    assert d.ranked.node_names[0] == "fast"


def test_permissive_fallback_is_not_an_error(node):
    policy = parse_policy({"mode": "permissive", "rules": {"min_reputation_score": 1.0}})
    d = decide_or_raise(policy, cluster(node))
    assert d.fallback and len(d.ranked) == 3


def test_permissive_with_only_dead_nodes_ranks_nothing(node):
    policy = parse_policy({"name": "p", "mode": "permissive"})
    nodes = [node("a", "failed", latency_ms=1), node("b", "left", latency_ms=1)]
    d = decide(policy, nodes)
    assert len(d.ranked) == 0
    assert not d.fallback
    with pytest.raises(NoQualifyingNode):
        decide_or_raise(policy, nodes)


# --------------------------------------------------------------------------- non-alive


@pytest.mark.parametrize("status", NON_ALIVE)
@pytest.mark.parametrize(
    "policy_data",
    [
        {"mode": "enforce"},
        {"mode": "permissive"},
        {"mode": "permissive", "rules": {"max_latency_ms": 0}},  # forces fallback
        {"mode": "enforce", "scoring": {"normalization": "relative"}},
    ],
    ids=["enforce", "permissive", "permissive-fallback", "enforce-relative"],
)
def test_non_alive_never_a_candidate(node, status, policy_data):
    best = node("best-but-down", status, latency_ms=1, price_per_gb=0.001, reputation=1.0, queue_depth=0)
    d = decide(parse_policy(policy_data), [best, *cluster(node)])
    assert "best-but-down" not in d.ranked.node_names
    rej = {r.node: r.reasons for r in d.rejected}
    assert rej["best-but-down"] == (f"not alive (status {status})",)
    assert d.total == 4


def test_missing_status_means_alive(node):
    d = decide(parse_policy({}), [{"name": "implicit", "latency_ms": 10}])
    assert d.ranked.node_names == ["implicit"]


# --------------------------------------------------------------------------- missing metrics


METRIC_RULES = [
    ("max_latency_ms", "latency_ms", 100),
    ("max_jitter_ms", "jitter_ms", 20),
    ("max_packet_loss", "packet_loss", 1),
    ("max_price_per_gb", "price_per_gb", 0.05),
    ("min_reputation_score", "reputation", 0.5),
    ("max_queue_depth", "queue_depth", 10),
]


@pytest.mark.parametrize("rule,metric,limit", METRIC_RULES, ids=[m[0] for m in METRIC_RULES])
def test_enforce_rejects_unknown_metric_a_rule_needs(node, rule, metric, limit):
    policy = parse_policy({"name": "e", "rules": {rule: limit}})
    nodes = [node("known", **{metric: limit}), node("unknown")]
    d = decide(policy, nodes)
    assert d.ranked.node_names == ["known"]
    assert [(r.node, r.reasons) for r in d.rejected] == [("unknown", (f"{metric} unknown",))]
    assert d.summary == f"1/2 nodes match policy 'e': 1 {metric} unknown"


@pytest.mark.parametrize("rule,metric,limit", METRIC_RULES, ids=[m[0] for m in METRIC_RULES])
def test_permissive_includes_unknown_metric(node, rule, metric, limit):
    policy = parse_policy({"name": "p", "mode": "permissive", "rules": {rule: limit}})
    d = decide(policy, [node("known", **{metric: limit}), node("unknown")])
    assert sorted(d.ranked.node_names) == ["known", "unknown"]
    assert d.rejected == []
    assert not d.fallback


@pytest.mark.parametrize(
    "weight,metric,component",
    [
        ("latency_weight", "latency_ms", "latency"),
        ("price_weight", "price_per_gb", "price"),
        ("reputation_weight", "reputation", "reputation"),
        ("queue_weight", "queue_depth", "queue"),
    ],
)
def test_permissive_unknown_metric_scores_neutral_half(node, weight, metric, component):
    rule = {"latency_ms": "max_latency_ms", "price_per_gb": "max_price_per_gb",
            "reputation": "min_reputation_score", "queue_depth": "max_queue_depth"}[metric]
    limit = 0.5 if metric == "reputation" else 1000
    policy = parse_policy({"mode": "permissive", "rules": {rule: limit}, "scoring": {weight: 0.8}})
    (r,) = decide(policy, [node("u")]).ranked
    assert r.components[component] == pytest.approx(0.8 * 0.5, rel=1e-12)
    assert r.score == pytest.approx(0.4, rel=1e-12)


def test_enforce_metric_without_rule_is_not_required(node):
    # no rule on reputation: a node without it stays a candidate, scored neutral
    policy = parse_policy({"rules": {"max_latency_ms": 100}, "scoring": {"reputation_weight": 1}})
    (r,) = decide(policy, [node("new", latency_ms=20)]).ranked
    assert r.node == "new" and r.score == 0.5


# --------------------------------------------------------------------------- workload capabilities


def caps_cluster(node):
    return [
        node("unknown-caps", latency_ms=5),  # reports no capabilities at all
        node("cpu-only", latency_ms=10, capabilities=["exec"]),
        node("gpu", latency_ms=50, capabilities=["exec", "gpu"]),
    ]


def test_require_capabilities_in_enforce(node):
    d = decide(parse_policy({"name": "e"}), caps_cluster(node), require_capabilities=["gpu"])
    assert d.ranked.node_names == ["gpu"]
    assert {r.node for r in d.rejected} == {"unknown-caps", "cpu-only"}


def test_require_capabilities_in_permissive_without_fallback(node):
    d = decide(parse_policy({"mode": "permissive"}), caps_cluster(node), require_capabilities=["gpu"])
    assert d.ranked.node_names == ["gpu"]
    assert not d.fallback


def test_require_capabilities_hold_in_permissive_fallback(node):
    policy = parse_policy({"name": "p", "mode": "permissive", "rules": {"max_latency_ms": 1}})
    d = decide(policy, caps_cluster(node), require_capabilities=["gpu"])
    assert d.fallback
    assert d.ranked.node_names == ["gpu"]


def test_require_capabilities_none_capable_in_permissive(node):
    policy = parse_policy({"mode": "permissive", "rules": {"max_latency_ms": 1}})
    d = decide(policy, caps_cluster(node), require_capabilities=["tpu"])
    assert len(d.ranked) == 0
    assert not d.fallback
    with pytest.raises(NoQualifyingNode):
        decide_or_raise(policy, caps_cluster(node), require_capabilities=["tpu"])


def test_require_capabilities_hold_in_fallback_when_policy_lists_them_too(node):
    policy = parse_policy(
        {"name": "p", "mode": "permissive", "rules": {"required_capabilities": ["gpu"], "max_latency_ms": 1}}
    )
    d = decide(policy, caps_cluster(node), require_capabilities=["gpu"])
    assert d.fallback
    assert d.ranked.node_names == ["gpu"]  # actual: ['unknown-caps', 'cpu-only', 'gpu']


def test_policy_listing_a_workload_capability_does_not_loosen_it(node):
    plain = parse_policy({"name": "p", "mode": "permissive"})
    listing = parse_policy({"name": "p", "mode": "permissive", "rules": {"required_capabilities": ["gpu"]}})
    without = decide(plain, caps_cluster(node), require_capabilities=["gpu"]).ranked.node_names
    with_ = decide(listing, caps_cluster(node), require_capabilities=["gpu"]).ranked.node_names
    assert without == ["gpu"]
    assert with_ == without  # actual: ['unknown-caps', 'gpu']


def test_permissive_policy_capability_rule_alone_admits_unknown_caps(node):
    # documented permissive semantics: an unknown metric (here: capabilities) does not fail a policy rule
    policy = parse_policy({"mode": "permissive", "rules": {"required_capabilities": ["gpu"]}})
    d = decide(policy, caps_cluster(node))
    assert sorted(d.ranked.node_names) == ["gpu", "unknown-caps"]
    assert [r.node for r in d.rejected] == ["cpu-only"]
