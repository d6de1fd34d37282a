"""PolicyEngine: atomic swaps under concurrency, and the prometheus counters."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from hypercore.policy import PERMISSIVE_DEFAULT, PolicyEngine, PolicyMetrics, decide, parse_policy

EVALS = "hypercore_ibrl_policy_evaluations_total"
VIOLATIONS = "hypercore_ibrl_policy_violations_total"


@pytest.fixture
def registry():
    return CollectorRegistry()


def evals(registry, policy):
    return registry.get_sample_value(EVALS, {"policy": policy})


def violations(registry, policy, rule):
    return registry.get_sample_value(VIOLATIONS, {"policy": policy, "rule": rule})


# --------------------------------------------------------------------------- holding and swapping


def test_default_policy_is_permissive_default():
    engine = PolicyEngine()
    assert engine.policy is PERMISSIVE_DEFAULT
    assert engine.policy.mode == "permissive"
    assert engine.policy.scoring.weights() == (0.25, 0.25, 0.25, 0.25)


def test_swap_returns_previous_and_installs_new(node):
    a, b = parse_policy({"name": "a"}), parse_policy({"name": "b"})
    engine = PolicyEngine(a)
    assert engine.swap(b) is a
    assert engine.policy is b
    assert engine.evaluate([node("n", latency_ms=1)]).policy == "b"
    assert engine.swap(a) is b


def test_explicit_policy_overrides_cluster_policy(node):
    engine = PolicyEngine(parse_policy({"name": "cluster", "rules": {"max_latency_ms": 1}}))
    spawn = parse_policy({"name": "spawn"})
    d = engine.evaluate([node("n", latency_ms=50)], spawn)
    assert d.policy == "spawn" and d.ranked.node_names == ["n"]
    assert engine.policy.name == "cluster"


def test_evaluate_passes_limit_and_capabilities(node):
    engine = PolicyEngine(parse_policy({"name": "p"}))
    nodes = [node("a", latency_ms=1, capabilities=["gpu"]), node("b", latency_ms=2), node("c", latency_ms=3, capabilities=["gpu"])]
    d = engine.evaluate(nodes, limit=1, require_capabilities=["gpu"])
    assert len(d.ranked) == 1
    assert d.ranked.node_names[0] in {"a", "c"}
    assert "b" in {r.node for r in d.rejected}


POLICY_A = {"name": "strict-a", "mode": "enforce", "rules": {"max_latency_ms": 10}, "scoring": {"latency_weight": 1}}
POLICY_B = {
    "name": "loose-b",
    "mode": "permissive",
    "rules": {"min_reputation_score": 0.95},
    "scoring": {"reputation_weight": 1, "normalization": "relative"},
}


def test_swap_is_atomic_under_concurrent_evaluation(node):
    a, b = parse_policy(POLICY_A), parse_policy(POLICY_B)
    nodes = [
        node("fast-untrusted", latency_ms=5, reputation=0.6),
        node("slow-trusted", latency_ms=80, reputation=0.99),
        node("mid", latency_ms=40, reputation=0.97),
        node("fast-trusted", latency_ms=8, reputation=0.96),
    ]
    # What each whole policy decides, computed once without concurrency.
    want = {}
    for p in (a, b):
        d = decide(p, nodes)
        want[p.name] = (d.mode, d.summary, list(d.ranked), d.rejected, d.fallback)
    assert want["strict-a"] != want["loose-b"]
    assert want["strict-a"][2][0].node == "fast-untrusted" and want["loose-b"][2][0].node == "slow-trusted"

    engine = PolicyEngine(a)
    stop = threading.Event()
    errors: list[str] = []
    seen: dict[str, int] = {"strict-a": 0, "loose-b": 0}

    def reader():
        while not stop.is_set():
            d = engine.evaluate(nodes)
            got = (d.mode, d.summary, list(d.ranked), d.rejected, d.fallback)
            if d.policy not in want or got != want[d.policy]:
                errors.append(f"mixed decision for {d.policy}: {got}")
                return
            seen[d.policy] += 1

    def writer():
        flip = False
        while not stop.is_set():
            engine.swap(b if flip else a)
            flip = not flip

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]
    assert seen["strict-a"] > 0 and seen["loose-b"] > 0, seen


# --------------------------------------------------------------------------- counters


def test_counters_start_absent_and_count_evaluations(registry, node):
    engine = PolicyEngine(parse_policy({"name": "p1"}), PolicyMetrics(registry))
    assert evals(registry, "p1") is None
    for _ in range(3):
        engine.evaluate([node("a", latency_ms=10)])
    assert evals(registry, "p1") == 3.0
    engine.evaluate([node("a", latency_ms=10)], parse_policy({"name": "p2"}))
    assert evals(registry, "p2") == 1.0
    assert evals(registry, "p1") == 3.0


def test_violation_counters_by_policy_and_rule(registry, node):
    policy = parse_policy(
        {"name": "lat", "rules": {"max_latency_ms": 50, "min_reputation_score": 0.9, "max_queue_depth": 10}}
    )
    engine = PolicyEngine(policy, PolicyMetrics(registry))
    nodes = [
        node("ok", latency_ms=10, reputation=0.95, queue_depth=1),
        node("slow", latency_ms=100, reputation=0.95, queue_depth=1),  # latency
        node("slow-shady", latency_ms=70, reputation=0.5, queue_depth=1),  # latency + reputation
        node("blind", reputation=0.99, queue_depth=1),  # latency unknown (enforce: counts as a violation)
        node("dead", "failed", latency_ms=999, reputation=0.0, queue_depth=99),  # not alive: not a rule violation
    ]
    engine.evaluate(nodes)
    assert evals(registry, "lat") == 1.0
    assert violations(registry, "lat", "max_latency_ms") == 3.0
    assert violations(registry, "lat", "min_reputation_score") == 1.0
    assert violations(registry, "lat", "max_queue_depth") is None  # never broken: no sample yet
    engine.evaluate(nodes)
    engine.evaluate(nodes)
    assert evals(registry, "lat") == 3.0
    assert violations(registry, "lat", "max_latency_ms") == 9.0
    assert violations(registry, "lat", "min_reputation_score") == 3.0


def test_counters_count_even_when_nothing_qualifies(registry, node):
    engine = PolicyEngine(parse_policy({"name": "none", "rules": {"max_price_per_gb": 0}}), PolicyMetrics(registry))
    d = engine.evaluate([node("a", price_per_gb=0.01), node("b", price_per_gb=0.02)])
    assert len(d.ranked) == 0
    assert evals(registry, "none") == 1.0
    assert violations(registry, "none", "max_price_per_gb") == 2.0


def test_permissive_unknown_metric_is_not_a_violation(registry, node):
    engine = PolicyEngine(parse_policy({"name": "perm", "mode": "permissive", "rules": {"max_latency_ms": 50}}), PolicyMetrics(registry))
    engine.evaluate([node("blind"), node("slow", latency_ms=60)])
    assert violations(registry, "perm", "max_latency_ms") == 1.0


def test_capability_violations_labelled_by_rule(registry, node):
    engine = PolicyEngine(parse_policy({"name": "caps", "rules": {"required_capabilities": ["gpu"]}}), PolicyMetrics(registry))
    engine.evaluate([node("a", capabilities=["exec"]), node("b", capabilities=["gpu"]), node("c")])
    # a lacks gpu; c reports no capabilities (enforce: rejected)
    assert violations(registry, "caps", "required_capabilities") == 2.0


def test_one_node_counts_once_per_rule(registry, node):
    engine = PolicyEngine(
        parse_policy({"name": "caps2", "rules": {"required_capabilities": ["gpu", "ssd"]}}), PolicyMetrics(registry)
    )
    d = engine.evaluate([node("bare", capabilities=["exec"]), node("full", capabilities=["gpu", "ssd"])])
    assert [r.node for r in d.rejected] == ["bare"]
    assert violations(registry, "caps2", "required_capabilities") == 1.0  # one node broke the rule; actual 2.0


def test_no_metrics_object_means_no_counting(node):
    engine = PolicyEngine(parse_policy({"name": "quiet"}))
    assert engine.metrics is None
    assert engine.evaluate([node("a")]).ranked.node_names == ["a"]


def test_metrics_registered_once_per_registry(registry):
    PolicyMetrics(registry)
    with pytest.raises(ValueError):
        PolicyMetrics(registry)  # duplicate registration is refused by prometheus_client
    PolicyMetrics(CollectorRegistry())  # a fresh registry is fine
