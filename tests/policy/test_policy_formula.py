"""The scoring formula, computed by hand.

Spec (fixed normalization, default scales):
    latency = 1 - latency_ms / 200      price = 1 - price_per_gb / 1.00
    queue   = 1 - queue_depth / 100     reputation = reputation
    score   = Σ weight × metric score, each metric score clamped at 0.
"""

from __future__ import annotations

import pytest

from hypercore.policy import decide, parse_policy

EXACT = dict(rel=1e-12, abs=1e-12)


def by_name(decision):
    return {r.node: r for r in decision.ranked}


def spec_score(w, latency_ms, price_per_gb, reputation, queue_depth, scales=(200.0, 1.0, 100.0)):
    """The spec's formula written out; components clamped at 0 as the engine documents."""
    lat = max(0.0, 1.0 - latency_ms / scales[0])
    price = max(0.0, 1.0 - price_per_gb / scales[1])
    queue = max(0.0, 1.0 - queue_depth / scales[2])
    comps = {"latency": w[0] * lat, "price": w[1] * price, "reputation": w[2] * reputation, "queue": w[3] * queue}
    return comps


def test_default_weights_default_scales_exact(node):
    # latency 50ms -> 1-50/200 = 0.75; price 0.5 -> 1-0.5/1 = 0.5; reputation 0.75; queue 25 -> 1-25/100 = 0.75
    # score = 0.25*0.75 + 0.25*0.5 + 0.25*0.75 + 0.25*0.75 = 0.1875+0.125+0.1875+0.1875 = 0.6875 (all dyadic: exact)
    d = decide(parse_policy({"name": "p"}), [node("n", latency_ms=50, price_per_gb=0.5, reputation=0.75, queue_depth=25)])
    (r,) = d.ranked
    assert r.components == {"latency": 0.1875, "price": 0.125, "reputation": 0.1875, "queue": 0.1875}
    assert r.score == 0.6875


@pytest.mark.parametrize(
    "weights",
    [(0.4, 0.3, 0.2, 0.1), (0.6, 0.1, 0.2, 0.1), (0.1, 0.7, 0.1, 0.1), (1.0, 1.0, 1.0, 1.0), (2.0, 0.0, 0.5, 0.0)],
)
@pytest.mark.parametrize(
    "metrics",
    [
        (12, 0.045, 0.97, 4),
        (85, 0.006, 0.82, 9),
        (140, 0.009, 0.61, 1),
        (199.9, 0.999, 0.0, 99.5),
        (0, 0, 1.0, 0),
    ],
)
def test_fixed_formula_matches_spec(node, weights, metrics):
    lat, price, rep, queue = metrics
    policy = parse_policy(
        {"name": "w", "scoring": dict(zip(("latency_weight", "price_weight", "reputation_weight", "queue_weight"), weights))}
    )
    d = decide(policy, [node("n", latency_ms=lat, price_per_gb=price, reputation=rep, queue_depth=queue)])
    (r,) = d.ranked
    want = spec_score(weights, lat, price, rep, queue)
    assert r.components == pytest.approx(want, **EXACT)
    assert r.score == pytest.approx(sum(want.values()), **EXACT)


def test_hand_values_realistic_node(node):
    # balanced weights 0.25: latency 38ms -> 0.81, price 0.021 -> 0.979, reputation 0.995, queue 2 -> 0.98
    # score = 0.25 * (0.81 + 0.979 + 0.995 + 0.98) = 0.25 * 3.764 = 0.941
    d = decide(parse_policy({}), [node("par", latency_ms=38, price_per_gb=0.021, reputation=0.995, queue_depth=2)])
    assert d.ranked[0].score == pytest.approx(0.941, **EXACT)
    assert d.ranked[0].components["latency"] == pytest.approx(0.2025, **EXACT)
    assert d.ranked[0].components["price"] == pytest.approx(0.24475, **EXACT)


@pytest.mark.parametrize(
    "metric,value,component",
    [
        ("latency_ms", 300, "latency"),  # 1 - 300/200 = -0.5 -> clamped to 0
        ("latency_ms", 200, "latency"),  # exactly the scale -> 0
        ("latency_ms", 1e9, "latency"),
        ("price_per_gb", 1.5, "price"),  # 1 - 1.5/1 = -0.5 -> 0
        ("queue_depth", 250, "queue"),  # 1 - 250/100 = -1.5 -> 0
    ],
)
def test_components_clamped_at_zero(node, metric, value, component):
    base = {"latency_ms": 50, "price_per_gb": 0.5, "reputation": 0.75, "queue_depth": 25}
    base[metric] = value
    (r,) = decide(parse_policy({}), [node("n", **base)]).ranked
    assert r.components[component] == 0.0
    # the other three keep their hand values (0.25*0.75, 0.25*0.5, 0.25*0.75, 0.25*0.75)
    others = {"latency": 0.1875, "price": 0.125, "reputation": 0.1875, "queue": 0.1875}
    del others[component]
    assert {k: v for k, v in r.components.items() if k != component} == others
    assert r.score == sum(others.values())


@pytest.mark.parametrize(
    "scoring",
    [
        {},
        {"latency_weight": 0, "price_weight": 0, "reputation_weight": 0, "queue_weight": 0},
        {"latency_weight": 0.0, "price_weight": None},
        {"latency_weight": None, "price_weight": None, "reputation_weight": None, "queue_weight": None},
    ],
)
def test_all_zero_or_absent_weights_default_to_quarter_each(node, scoring):
    policy = parse_policy({"scoring": scoring})
    assert policy.scoring.weights() == (0.25, 0.25, 0.25, 0.25)
    (r,) = decide(policy, [node("n", latency_ms=100, price_per_gb=0.25, reputation=0.5, queue_depth=50)]).ranked
    # 0.25*(1-100/200) = 0.125; 0.25*(1-0.25) = 0.1875; 0.25*0.5 = 0.125; 0.25*(1-50/100) = 0.125
    assert r.components == {"latency": 0.125, "price": 0.1875, "reputation": 0.125, "queue": 0.125}
    assert r.score == 0.5625


def test_partial_weights_absent_means_zero(node):
    policy = parse_policy({"scoring": {"latency_weight": 1}})
    assert policy.scoring.weights() == (1.0, 0.0, 0.0, 0.0)
    (r,) = decide(policy, [node("n", latency_ms=50, price_per_gb=0.01, reputation=1.0, queue_depth=0)]).ranked
    # only latency counts: 1 * (1 - 50/200) = 0.75
    assert r.components == {"latency": 0.75, "price": 0.0, "reputation": 0.0, "queue": 0.0}
    assert r.score == 0.75


def test_partial_weights_two_of_four(node):
    policy = parse_policy({"scoring": {"price_weight": 0.5, "reputation_weight": 0.5}})
    (r,) = decide(policy, [node("n", latency_ms=10, price_per_gb=0.25, reputation=0.5, queue_depth=0)]).ranked
    # 0.5*(1-0.25) + 0.5*0.5 = 0.375 + 0.25
    assert r.components == {"latency": 0.0, "price": 0.375, "reputation": 0.25, "queue": 0.0}
    assert r.score == 0.625


def test_weights_are_not_renormalized(node):
    # Σ weight × metric with weights as given: 2 * (1 - 50/200) = 1.5
    policy = parse_policy({"scoring": {"latency_weight": 2}})
    (r,) = decide(policy, [node("n", latency_ms=50)]).ranked
    assert r.score == 1.5


def test_custom_scales(node):
    policy = parse_policy(
        {"scoring": {"scales": {"latency_ms": 100, "price_per_gb": 0.05, "queue_depth": 10}}}
    )
    (r,) = decide(policy, [node("n", latency_ms=25, price_per_gb=0.0125, reputation=0.5, queue_depth=5)]).ranked
    # 1-25/100 = 0.75; 1-0.0125/0.05 = 0.75; 0.5; 1-5/10 = 0.5 ; × 0.25 each
    assert r.components == pytest.approx({"latency": 0.1875, "price": 0.1875, "reputation": 0.125, "queue": 0.125}, **EXACT)
    assert r.score == pytest.approx(0.625, **EXACT)


def test_custom_scale_clamps_too(node):
    policy = parse_policy({"scoring": {"latency_weight": 1, "scales": {"latency_ms": 100}}})
    (r,) = decide(policy, [node("n", latency_ms=150)]).ranked
    assert r.score == 0.0


def test_fixed_scores_do_not_depend_on_other_nodes(node):
    policy = parse_policy({})
    alone = decide(policy, [node("n", latency_ms=40, price_per_gb=0.02, reputation=0.9, queue_depth=3)]).ranked[0]
    crowd = decide(
        policy,
        [
            node("n", latency_ms=40, price_per_gb=0.02, reputation=0.9, queue_depth=3),
            node("m", latency_ms=5, price_per_gb=0.001, reputation=1.0, queue_depth=0),
            node("o", latency_ms=900, price_per_gb=9, reputation=0.0, queue_depth=900),
        ],
    )
    assert by_name(crowd)["n"] == alone


def test_unknown_metric_scores_neutral_half_fixed(node):
    policy = parse_policy({"scoring": {"latency_weight": 1, "reputation_weight": 1}})
    (r,) = decide(policy, [node("n", reputation=0.8)]).ranked  # latency missing, no rule on it
    assert r.components["latency"] == 0.5
    assert r.components["reputation"] == pytest.approx(0.8, **EXACT)


# --------------------------------------------------------------------------- relative normalization


def test_relative_min_max(node):
    policy = parse_policy({"scoring": {"normalization": "relative"}})
    nodes = [
        node("a", latency_ms=10, price_per_gb=0.03, reputation=0.6, queue_depth=0),
        node("b", latency_ms=30, price_per_gb=0.02, reputation=0.8, queue_depth=5),
        node("c", latency_ms=50, price_per_gb=0.01, reputation=1.0, queue_depth=20),
    ]
    got = by_name(decide(policy, nodes))
    # latency (max-x)/(max-min) over 10..50: a 1, b 0.5, c 0
    # price over 0.01..0.03: a 0, b 0.5, c 1
    # reputation (x-min)/(max-min) over 0.6..1.0: a 0, b 0.5, c 1
    # queue over 0..20: a 1, b 0.75, c 0
    want = {
        "a": {"latency": 0.25, "price": 0.0, "reputation": 0.0, "queue": 0.25},
        "b": {"latency": 0.125, "price": 0.125, "reputation": 0.125, "queue": 0.1875},
        "c": {"latency": 0.0, "price": 0.25, "reputation": 0.25, "queue": 0.0},
    }
    for name, comps in want.items():
        assert got[name].components == pytest.approx(comps, **EXACT)
        assert got[name].score == pytest.approx(sum(comps.values()), **EXACT)
    assert [r.node for r in decide(policy, nodes).ranked] == ["b", "a", "c"]  # 0.5625, then a tie at 0.5 by name


def test_relative_uses_only_candidates_that_passed(node):
    policy = parse_policy(
        {"rules": {"max_latency_ms": 100}, "scoring": {"latency_weight": 1, "normalization": "relative"}}
    )
    nodes = [
        node("a", latency_ms=20),
        node("b", latency_ms=40),
        node("c", latency_ms=60),
        node("far", latency_ms=500),  # rejected by the rule: must not stretch the range
        node("dead", status="failed", latency_ms=1),  # not alive: must not stretch the range
    ]
    got = by_name(decide(policy, nodes))
    assert set(got) == {"a", "b", "c"}
    # range 20..60: a 1, b (60-40)/40 = 0.5, c 0
    assert got["a"].score == 1.0
    assert got["b"].score == 0.5
    assert got["c"].score == 0.0


def test_relative_all_equal_scores_one(node):
    policy = parse_policy({"scoring": {"normalization": "relative"}})
    nodes = [node(n, latency_ms=25, price_per_gb=0.02, reputation=0.9, queue_depth=3) for n in ("x", "y", "z")]
    for r in decide(policy, nodes).ranked:
        assert r.components == {"latency": 0.25, "price": 0.25, "reputation": 0.25, "queue": 0.25}
        assert r.score == 1.0


def test_relative_single_candidate_scores_one(node):
    policy = parse_policy({"scoring": {"latency_weight": 1, "normalization": "relative"}})
    (r,) = decide(policy, [node("solo", latency_ms=140)]).ranked
    assert r.score == 1.0


def test_relative_unknown_is_neutral_and_ignored_for_range(node):
    policy = parse_policy({"scoring": {"latency_weight": 1, "normalization": "relative"}})
    nodes = [node("a", latency_ms=10), node("b", latency_ms=30), node("u")]
    got = by_name(decide(policy, nodes))
    assert got["u"].score == 0.5
    assert got["a"].score == 1.0  # range is 10..30, not stretched by the unknown
    assert got["b"].score == 0.0


def test_relative_all_unknown_is_neutral(node):
    policy = parse_policy({"scoring": {"reputation_weight": 1, "normalization": "relative"}})
    got = by_name(decide(policy, [node("a"), node("b")]))
    assert got["a"].score == got["b"].score == 0.5


def test_relative_in_permissive_fallback_spans_all_alive(node):
    policy = parse_policy(
        {
            "mode": "permissive",
            "rules": {"max_latency_ms": 1},
            "scoring": {"latency_weight": 1, "normalization": "relative"},
        }
    )
    nodes = [node("a", latency_ms=10), node("b", latency_ms=20), node("c", latency_ms=30), node("d", "left", latency_ms=0)]
    d = decide(policy, nodes)
    assert d.fallback
    got = by_name(d)
    assert (got["a"].score, got["b"].score, got["c"].score) == (1.0, 0.5, 0.0)


def test_score_is_sum_of_components(node, cluster_nodes, example_policies):
    for policy in example_policies.values():
        for r in decide(policy, cluster_nodes("eu-metro")).ranked:
            assert r.score == pytest.approx(sum(r.components.values()), **EXACT)
