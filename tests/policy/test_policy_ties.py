"""Ties: score descending, then node name ascending; independent of input order; top-k is a prefix."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from hypercore.policy import NodeTable, decide, parse_policy


def same(node, name):
    return node(name, latency_ms=20, price_per_gb=0.02, reputation=0.9, queue_depth=2)


def test_equal_scores_ordered_by_name_for_every_input_order(node):
    policy = parse_policy({})
    names = ["delta", "alpha", "charlie", "bravo"]
    for perm in itertools.permutations(names):
        d = decide(policy, [same(node, n) for n in perm])
        assert d.ranked.node_names == ["alpha", "bravo", "charlie", "delta"]
        assert len({r.score for r in d.ranked}) == 1


def test_name_order_is_byte_order_not_locale(node):
    policy = parse_policy({})
    names = ["émile", "alpha", "Zeta", "node-10", "node-2", "Alpha"]
    d = decide(policy, [same(node, n) for n in names])
    # code point (= UTF-8 byte) order: uppercase before lowercase, "10" before "2", é after ASCII
    assert d.ranked.node_names == ["Alpha", "Zeta", "alpha", "node-10", "node-2", "émile"]
    assert d.ranked.node_names == sorted(names, key=lambda s: s.encode("utf-8"))


def test_score_beats_name(node):
    policy = parse_policy({"scoring": {"latency_weight": 1}})
    d = decide(policy, [node("aaa", latency_ms=100), node("zzz", latency_ms=10)])
    assert d.ranked.node_names == ["zzz", "aaa"]


def test_top_k_with_ties_at_the_cut(node):
    policy = parse_policy({"scoring": {"latency_weight": 1}})
    nodes = [
        node("low", latency_ms=150),
        node("c", latency_ms=50),
        node("winner", latency_ms=5),
        node("a", latency_ms=50),
        node("b", latency_ms=50),
    ]
    full = decide(policy, nodes).ranked.node_names
    assert full == ["winner", "a", "b", "c", "low"]
    for k in range(1, 7):
        assert decide(policy, nodes, limit=k).ranked.node_names == full[:k]
    random.Random(7).shuffle(nodes)
    assert decide(policy, nodes, limit=2).ranked.node_names == ["winner", "a"]
    assert decide(policy, nodes, limit=3).ranked.node_names == ["winner", "a", "b"]


def test_top_k_scores_and_components_match_full(node, cluster_nodes, example_policies):
    nodes = cluster_nodes("apac-budget")
    for policy in example_policies.values():
        full = list(decide(policy, nodes).ranked)
        for k in (1, 2, 3, len(full), len(full) + 5):
            assert list(decide(policy, nodes, limit=k).ranked) == full[:k]


def test_limit_does_not_change_rejected_or_summary(node, cluster_nodes, example_policies):
    nodes = cluster_nodes("mixed-health")
    for policy in example_policies.values():
        full = decide(policy, nodes)
        top = decide(policy, nodes, limit=1)
        assert top.summary == full.summary
        assert top.rejected == full.rejected
        assert top.fallback == full.fallback


def test_node_table_and_records_agree(node, cluster_nodes, example_policies):
    nodes = cluster_nodes("us-regions")
    table = NodeTable.from_records(nodes)
    for policy in example_policies.values():
        assert list(decide(policy, table).ranked) == list(decide(policy, nodes).ranked)


# --------------------------------------------------------------------------- property: many ties

# Few distinct values, so ties are frequent.
_lat = st.sampled_from([None, 10.0, 20.0, 50.0])
_price = st.sampled_from([None, 0.01, 0.02])
_rep = st.sampled_from([None, 0.5, 0.9, 1.0])
_queue = st.sampled_from([None, 0.0, 5.0])
_status = st.sampled_from(["alive", "alive", "alive", "failed"])


@st.composite
def tie_clusters(draw):
    names = draw(st.lists(st.text("abcXYZ01-", min_size=1, max_size=4), min_size=1, max_size=12, unique=True))
    return [
        {
            "name": n,
            "status": draw(_status),
            "latency_ms": draw(_lat),
            "price_per_gb": draw(_price),
            "reputation": draw(_rep),
            "queue_depth": draw(_queue),
        }
        for n in names
    ]


_policies = st.sampled_from(
    [
        parse_policy({}),
        parse_policy({"scoring": {"normalization": "relative"}}),
        parse_policy({"mode": "permissive", "rules": {"max_latency_ms": 15}, "scoring": {"latency_weight": 1}}),
        parse_policy({"rules": {"max_latency_ms": 50}, "scoring": {"price_weight": 1, "normalization": "relative"}}),
    ]
)


@settings(max_examples=150, deadline=None)
@given(nodes=tie_clusters(), policy=_policies, seed=st.randoms(use_true_random=False), k=st.integers(1, 14))
def test_ranking_is_deterministic_sorted_and_top_k_is_prefix(nodes, policy, seed, k):
    full = decide(policy, nodes)
    ranked = list(full.ranked)
    # sorted by (score desc, name asc), with no duplicates
    assert ranked == sorted(ranked, key=lambda r: (-r.score, r.node))
    assert len({r.node for r in ranked}) == len(ranked)
    # independent of the input order
    shuffled = list(nodes)
    seed.shuffle(shuffled)
    again = decide(policy, shuffled)
    assert list(again.ranked) == ranked
    assert again.summary == full.summary
    assert sorted(again.rejected, key=lambda r: r.node) == sorted(full.rejected, key=lambda r: r.node)
    # top-k is exactly the prefix of the full ranking, ties at the cut included
    assert list(decide(policy, shuffled, limit=k).ranked) == ranked[:k]


def test_top_k_is_prefix_on_a_large_cluster_with_many_ties():
    # Thousands of candidates: large enough for an engine to select the top k without sorting everything.
    rng = random.Random(11)
    nodes = [
        {
            "name": f"n{rng.randrange(10**9):09d}-{i}",
            "status": "alive" if i % 10 else "failed",
            "latency_ms": rng.choice([10.0, 20.0, 30.0]),
            "price_per_gb": rng.choice([0.01, 0.02]),
            "reputation": rng.choice([0.9, 1.0]),
            "queue_depth": rng.choice([0.0, 5.0]),
        }
        for i in range(5000)
    ]
    for policy in (
        parse_policy({}),
        parse_policy({"scoring": {"latency_weight": 1}}),
        parse_policy({"rules": {"max_latency_ms": 20}, "scoring": {"normalization": "relative"}}),
    ):
        table = NodeTable.from_records(nodes)
        full = decide(policy, table).ranked
        names = full.node_names
        scores = [r.score for r in full]
        assert all(
            (scores[j], names[j]) != (scores[j + 1], names[j + 1])
            and (scores[j] > scores[j + 1] or (scores[j] == scores[j + 1] and names[j] < names[j + 1]))
            for j in range(len(names) - 1)
        )
        shuffled = list(nodes)
        rng.shuffle(shuffled)
        shuffled_table = NodeTable.from_records(shuffled)
        assert decide(policy, shuffled_table).ranked.node_names == names
        for k in (1, 5, 17, 100, 1500, len(names) - 1, len(names), len(names) + 3):
            assert decide(policy, table, limit=k).ranked.node_names == names[:k]
            assert decide(policy, shuffled_table, limit=k).ranked.node_names == names[:k]
