"""Each hard rule on its own, its boundary, literal zero, 'no limit', reasons and the summary line."""

from __future__ import annotations

import pytest

from hypercore.policy import decide, parse_policy

# (rule key, limit, node metric, value exactly at the limit, a value that breaks it, summary label, reason)
THRESHOLD_CASES = [
    ("max_latency_ms", 100, "latency_ms", 100, 100.5, "latency_ms > 100", "latency_ms > 100 (is 100.5)"),
    ("max_jitter_ms", 20, "jitter_ms", 20, 21, "jitter_ms > 20", "jitter_ms > 20 (is 21)"),
    ("max_price_per_gb", 0.03, "price_per_gb", 0.03, 0.031, "price_per_gb > 0.03", "price_per_gb > 0.03 (is 0.031)"),
    ("min_reputation_score", 0.9, "reputation", 0.9, 0.89, "reputation < 0.9", "reputation < 0.9 (is 0.89)"),
    ("max_queue_depth", 10, "queue_depth", 10, 11, "queue_depth > 10", "queue_depth > 10 (is 11)"),
    ("max_packet_loss", 1.5, "packet_loss", 1.5, 1.6, "packet_loss > 1.5", "packet_loss > 1.5 (is 1.6)"),
]
IDS = [c[0] for c in THRESHOLD_CASES]


@pytest.mark.parametrize("rule,limit,metric,at,bad,label,reason", THRESHOLD_CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["enforce", "permissive"])
def test_threshold_rule_boundary_and_reason(node, mode, rule, limit, metric, at, bad, label, reason):
    policy = parse_policy({"name": "r", "mode": mode, "rules": {rule: limit}})
    nodes = [node("at-limit", **{metric: at}), node("breaks", **{metric: bad})]
    d = decide(policy, nodes)
    assert d.ranked.node_names == ["at-limit"]  # equal to the limit passes
    assert not d.fallback
    assert [(r.node, r.reasons) for r in d.rejected] == [("breaks", (reason,))]
    assert d.summary == f"1/2 nodes match policy 'r': 1 {label}"


@pytest.mark.parametrize("rule,limit,metric,at,bad,label,reason", THRESHOLD_CASES, ids=IDS)
def test_threshold_rule_better_side_passes(node, rule, limit, metric, at, bad, label, reason):
    # the other side of the limit from `bad` (or the limit itself) passes
    better = at - (bad - at)
    better = max(better, 0.0)
    d = decide(parse_policy({"rules": {rule: limit}}), [node("good", **{metric: better})])
    assert d.ranked.node_names == ["good"]


@pytest.mark.parametrize(
    "rule,metric,rejected_value",
    [
        ("max_latency_ms", "latency_ms", 0.001),
        ("max_jitter_ms", "jitter_ms", 0.5),
        ("max_price_per_gb", "price_per_gb", 0.0001),
        ("max_queue_depth", "queue_depth", 1),
        ("max_packet_loss", "packet_loss", 0.01),
    ],
)
def test_explicit_zero_is_a_literal_zero(node, rule, metric, rejected_value):
    policy = parse_policy({"rules": {rule: 0}})
    assert getattr(policy.rules, rule) == 0
    assert policy.rules.zero_limits() == [rule]
    d = decide(policy, [node("zero", **{metric: 0}), node("some", **{metric: rejected_value})])
    assert d.ranked.node_names == ["zero"]
    assert [r.node for r in d.rejected] == ["some"]


def test_min_reputation_zero_admits_everyone(node):
    d = decide(parse_policy({"rules": {"min_reputation_score": 0}}), [node("a", reputation=0.0), node("b", reputation=1.0)])
    assert sorted(d.ranked.node_names) == ["a", "b"]


@pytest.mark.parametrize("rule,metric,huge", [
    ("max_latency_ms", "latency_ms", 1e9),
    ("max_jitter_ms", "jitter_ms", 1e9),
    ("max_price_per_gb", "price_per_gb", 1e9),
    ("max_queue_depth", "queue_depth", 1e9),
    ("max_packet_loss", "packet_loss", 100),
    ("min_reputation_score", "reputation", 0.0),
])
@pytest.mark.parametrize("how", ["null", "absent"])
def test_null_or_absent_means_no_limit(node, rule, metric, huge, how):
    data = {"rules": {rule: None}} if how == "null" else {"rules": {}}
    policy = parse_policy(data)
    assert getattr(policy.rules, rule) is None
    assert policy.rules.zero_limits() == []
    d = decide(policy, [node("extreme", **{metric: huge})])
    assert d.ranked.node_names == ["extreme"]
    assert d.rejected == []
    assert d.summary == "1/1 nodes match policy 'unnamed'"


def test_null_flat_rule_means_no_limit(node):
    policy = parse_policy({"max_latency_ms": None})
    assert policy.rules.max_latency_ms is None
    assert decide(policy, [node("slow", latency_ms=5000)]).ranked.node_names == ["slow"]


def test_required_capabilities_all_must_be_present(node):
    policy = parse_policy({"name": "caps", "rules": {"required_capabilities": ["gpu", "exec"]}})
    nodes = [
        node("both", capabilities=["exec", "gpu", "container"]),
        node("exec-only", capabilities=["exec"]),
        node("none", capabilities=[]),
    ]
    d = decide(policy, nodes)
    assert d.ranked.node_names == ["both"]
    reasons = {r.node: r.reasons for r in d.rejected}
    assert reasons == {
        "exec-only": ("missing capability gpu",),
        "none": ("missing capability exec", "missing capability gpu"),
    }
    assert d.summary == "1/3 nodes match policy 'caps': 2 missing capability gpu, 1 missing capability exec"


def test_required_capabilities_empty_list_requires_nothing(node):
    d = decide(parse_policy({"rules": {"required_capabilities": []}}), [node("bare", capabilities=[])])
    assert d.ranked.node_names == ["bare"]


def test_required_capabilities_are_case_sensitive(node):
    d = decide(parse_policy({"rules": {"required_capabilities": ["GPU"]}}), [node("n", capabilities=["gpu"])])
    assert d.ranked.node_names == []


def test_ultra_strict_summary_exact(node):
    # Hand-built: every node breaks latency (> 1 ms); n1 and n3 break price; n2 breaks reputation.
    policy = parse_policy(
        {
            "name": "ultra-strict",
            "rules": {"max_latency_ms": 1, "max_price_per_gb": 0.001, "min_reputation_score": 0.99},
        }
    )
    nodes = [
        node("n1", latency_ms=12, price_per_gb=0.02, reputation=0.995),
        node("n2", latency_ms=40, price_per_gb=0.0008, reputation=0.97),
        node("n3", latency_ms=5, price_per_gb=0.045, reputation=1.0),
    ]
    d = decide(policy, nodes)
    assert d.summary == "0/3 nodes match policy 'ultra-strict': 3 latency_ms > 1, 2 price_per_gb > 0.001, 1 reputation < 0.99"
    assert [(r.node, r.reasons) for r in d.rejected] == [
        ("n1", ("latency_ms > 1 (is 12)", "price_per_gb > 0.001 (is 0.02)")),
        ("n2", ("latency_ms > 1 (is 40)", "reputation < 0.99 (is 0.97)")),
        ("n3", ("latency_ms > 1 (is 5)", "price_per_gb > 0.001 (is 0.045)")),
    ]
    assert d.ranked.node_names == []


def test_summary_orders_by_count_then_rule_order(node):
    policy = parse_policy({"name": "q", "rules": {"max_latency_ms": 10, "max_queue_depth": 5, "max_jitter_ms": 3}})
    nodes = [
        node("a", latency_ms=50, jitter_ms=1, queue_depth=9),
        node("b", latency_ms=5, jitter_ms=9, queue_depth=7),
        node("c", latency_ms=5, jitter_ms=1, queue_depth=6),
        node("d", latency_ms=5, jitter_ms=1, queue_depth=1),
    ]
    d = decide(policy, nodes)
    # queue: a, b, c = 3; latency: a = 1; jitter: b = 1 (latency precedes jitter in rule order)
    assert d.summary == "1/4 nodes match policy 'q': 3 queue_depth > 5, 1 latency_ms > 10, 1 jitter_ms > 3"


def test_summary_counts_not_alive_and_unknown(node):
    policy = parse_policy({"name": "s", "rules": {"max_latency_ms": 50}})
    nodes = [
        node("ok", latency_ms=10),
        node("slow", latency_ms=60),
        node("dead", "failed", latency_ms=1),
        node("gone", "left", latency_ms=1),
        node("blind"),
    ]
    d = decide(policy, nodes)
    assert d.summary == "1/5 nodes match policy 's': 2 not alive, 1 latency_ms > 50, 1 latency_ms unknown"
    assert {r.node: r.reasons for r in d.rejected} == {
        "slow": ("latency_ms > 50 (is 60)",),
        "dead": ("not alive (status failed)",),
        "gone": ("not alive (status left)",),
        "blind": ("latency_ms unknown",),
    }


def test_summary_without_rejections_has_no_reason_list(node):
    d = decide(parse_policy({"name": "all"}), [node("a"), node("b"), node("c")])
    assert d.summary == "3/3 nodes match policy 'all'"


def test_limit_formatting_in_labels(node):
    # labels show the limit as written (general format): 0.0005 and 250, not 0.000500 or 250.0
    policy = parse_policy({"name": "f", "rules": {"max_price_per_gb": 0.0005, "max_queue_depth": 250.0}})
    d = decide(policy, [node("x", price_per_gb=0.001, queue_depth=251)])
    assert d.summary == "0/1 nodes match policy 'f': 1 price_per_gb > 0.0005, 1 queue_depth > 250"


def test_every_broken_rule_is_listed(node):
    policy = parse_policy(
        {
            "rules": {
                "required_capabilities": ["gpu"],
                "max_latency_ms": 10,
                "max_jitter_ms": 1,
                "max_packet_loss": 0.1,
                "max_price_per_gb": 0.01,
                "min_reputation_score": 0.9,
                "max_queue_depth": 1,
            }
        }
    )
    bad = node(
        "bad",
        latency_ms=20,
        jitter_ms=2,
        packet_loss=0.5,
        price_per_gb=0.02,
        reputation=0.5,
        queue_depth=3,
        capabilities=["exec"],
    )
    (rej,) = decide(policy, [bad]).rejected
    assert rej.reasons == (
        "latency_ms > 10 (is 20)",
        "jitter_ms > 1 (is 2)",
        "packet_loss > 0.1 (is 0.5)",
        "price_per_gb > 0.01 (is 0.02)",
        "reputation < 0.9 (is 0.5)",
        "queue_depth > 1 (is 3)",
        "missing capability gpu",
    )


def test_unknown_capabilities_reason_names_capabilities(node):
    policy = parse_policy({"name": "caps", "rules": {"required_capabilities": ["gpu"]}})
    d = decide(policy, [node("mystery"), node("has", capabilities=["gpu"])])  # `mystery` reports no capabilities
    assert d.ranked.node_names == ["has"]
    (rej,) = d.rejected
    assert rej.node == "mystery"
    assert all("None" not in reason for reason in rej.reasons), rej.reasons
    assert len(rej.reasons) == 1
    assert "capabilit" in rej.reasons[0] and "unknown" in rej.reasons[0], rej.reasons
    assert "None" not in d.summary, d.summary
