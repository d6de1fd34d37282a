"""NodeTable.with_rows (issue 10): a table changed row by row is the table built from the same records.

The live view patches its table on every beacon refresh, arrival and departure instead of validating every
record again (hypercore.membership.engine_table); a patched table that differs in any column, any row's
capabilities, region or status, or the name order would rank differently from the rebuilt one.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from hypercore.policy import NodeRecord, NodeTable, decide, parse_policy
from hypercore.policy.registry import RESOURCES

CAPABILITIES = [None, ("exec",), ("exec", "gpu"), ("container",), ()]
REGIONS = [None, "eu", "us", "ap"]


def record(rng: random.Random, name: str) -> NodeRecord:
    def maybe(low: float, high: float) -> float | None:
        return None if rng.random() < 0.15 else round(rng.uniform(low, high), 3)

    return NodeRecord.model_validate({
        "name": name, "status": rng.choice(["alive", "alive", "alive", "failed", "left"]),
        "admitted": rng.random() > 0.1, "region": rng.choice(REGIONS),
        "latency_ms": maybe(0, 300), "jitter_ms": maybe(0, 50), "packet_loss": maybe(0, 5),
        "queue_depth": maybe(0, 20), "price_per_gb": maybe(0, 1), "reputation": maybe(0, 1),
        "cpu_total": maybe(1, 64), "cpu_free": maybe(0, 64), "mem_total_mb": maybe(512, 65536),
        "mem_free_mb": maybe(0, 65536),
        "capabilities": None if (c := rng.choice(CAPABILITIES)) is None else list(c),
    })


def assert_same(patched: NodeTable, built: NodeTable) -> None:
    assert patched.names == built.names
    assert patched.statuses == built.statuses
    assert np.array_equal(patched.alive, built.alive)
    assert np.array_equal(patched.name_rank, built.name_rank)
    for metric in (*built.registry.names, *RESOURCES):
        assert np.array_equal(patched.columns[metric], built.columns[metric], equal_nan=True), metric
        assert np.array_equal(patched.unknown[metric], built.unknown[metric]), metric
    assert [patched.cap_sets[i] for i in patched.cap_ids] == [built.cap_sets[i] for i in built.cap_ids]
    assert patched.region_of() == built.region_of()
    for name in built.names:
        assert patched.index_of(name) == built.index_of(name)
    for policy in ({}, {"scoring": {"latency_weight": 1, "price_weight": 1}},
                   {"rules": {"max_latency_ms": 150, "required_capabilities": ["exec"]}}):
        a, b = decide(parse_policy(policy), patched), decide(parse_policy(policy), built)
        assert a.ranked.node_names == b.ranked.node_names
        assert [r.node for r in a.rejected] == [r.node for r in b.rejected]


@pytest.mark.parametrize("seed", range(40))
def test_a_table_changed_row_by_row_is_the_table_built_from_its_records(seed: int) -> None:
    rng = random.Random(seed)
    records = {name: record(rng, name) for name in rng.sample([f"n{i:03d}" for i in range(60)], rng.randint(0, 30))}
    table = NodeTable.from_records([records[n] for n in sorted(records)])
    for _ in range(6):
        changed = [record(rng, n) for n in rng.sample(sorted(records), min(len(records), rng.randint(0, 4)))]
        added = [record(rng, f"n{rng.randrange(60):03d}x") for _ in range(rng.randint(0, 3))]
        removed = rng.sample(sorted(records), min(len(records), rng.randint(0, 3)))
        for r in changed + added:
            records[r.name] = r
        for name in removed:
            records.pop(name, None)
        # a name both changed and removed is removed; one removed and added again is back
        table = table.with_rows([records[r.name] for r in changed + added if r.name in records], removed=removed)
        assert_same(table, NodeTable.from_records([records[n] for n in sorted(records)]))


def test_rows_of_a_table_not_in_name_order_keep_their_order_and_new_ones_go_at_the_end() -> None:
    rng = random.Random(1)
    records = [record(rng, n) for n in ("delta", "alpha", "charlie")]
    table = NodeTable.from_records(records)
    patched = table.with_rows([record(rng, "bravo"), record(rng, "alpha")], removed=["charlie"])
    assert patched.names == ("delta", "alpha", "bravo")
    assert [patched.names[i] for i in np.argsort(patched.name_rank)] == ["alpha", "bravo", "delta"]
    assert decide(parse_policy({}), patched).ranked.node_names == decide(
        parse_policy({}), [patched.record(i) for i in range(3)]).ranked.node_names


def test_a_patched_table_is_as_read_only_as_a_built_one() -> None:
    rng = random.Random(2)
    table = NodeTable.from_records([record(rng, "a"), record(rng, "b")]).with_rows([record(rng, "a")])
    for array in (table.alive, table.cap_ids, table.name_rank, *table.columns.values(), *table.unknown.values()):
        with pytest.raises(ValueError):
            array[0] = 0


def test_adjusting_several_metrics_at_once_is_setting_then_adding_one_by_one() -> None:
    rng = random.Random(3)
    table = NodeTable.from_records([record(rng, f"n{i}") for i in range(20)])
    values = {"queue_depth": {"n1": 4.0, "n2": 0.0, "gone": 1.0}}
    added = {"queue_depth": {"n1": 2.0, "n3": 1.0}, "cpu_free": {"n1": -0.5, "n4": -1.0, "gone": 2.0},
             "mem_free_mb": {"n5": -256.0}}
    once = table.with_adjusted(values=values, added=added)
    chain = table.with_values("queue_depth", values["queue_depth"])
    for metric, extra in added.items():
        chain = chain.with_added(metric, extra)
    assert_same(once, chain)
    assert once.columns["queue_depth"][once.index_of("n1")] == 6.0
    assert np.isnan(table.columns["cpu_free"][table.index_of("n4")]) == np.isnan(once.columns["cpu_free"][4])


def test_records_of_the_default_registry_in_a_table_of_an_extended_one_have_its_metrics_unknown() -> None:
    # A review found it: the faster build (one attrgetter per record) raised AttributeError here, where the
    # loop per metric before it read a missing metric as unknown.
    from hypercore.policy import DEFAULT_REGISTRY, Metric

    thermal = DEFAULT_REGISTRY.extended(Metric("temperature_c", "°C", "hottest sensor", maximum=150,
                                               rule="max_temperature_c", rule_doc="Hottest a node may run.",
                                               component="thermal", default_scale=100.0))
    table = NodeTable.from_records([NodeRecord(name="a", cpu_free=2.0)], thermal)
    assert np.isnan(table.columns["temperature_c"][0]) and table.columns["cpu_free"][0] == 2.0


def test_a_cluster_of_many_capability_sets_is_patched_not_built_again_on_every_change() -> None:
    # A review found it: with more than 64 distinct sets in use, every change built the table again.
    from unittest import mock

    from hypercore.membership.engine_table import EngineTable

    rows = EngineTable()
    for i in range(200):
        rows.put(f"n{i:03d}", {"name": f"n{i:03d}", "capabilities": [f"cap{i % 100}"], "queue_depth": 0.0})
    first = rows.table()
    assert len(first.cap_sets) == 100
    with mock.patch.object(NodeTable, "from_records", wraps=NodeTable.from_records) as built:
        for i in range(20):
            rows.put("n007", {"name": "n007", "capabilities": ["cap7"], "queue_depth": float(i)})
            assert rows.table().columns["queue_depth"][first.index_of("n007")] == float(i)
        for i in range(140):  # one member going through new sets: a build per 65 of them
            rows.put("n008", {"name": "n008", "capabilities": [f"new{i}"]})
            rows.table()
        assert built.call_count == 2
    last = rows.table()
    assert last.cap_sets[last.cap_ids[last.index_of("n008")]] == frozenset({"new139"})
    assert len(last.cap_sets) <= 101 + 64
