"""What the placing node puts in the table instead of nodes' own words, worked out for all nodes at once.

OriginLinks.arrays and Reputation.scores_array are the vectorised forms of
OriginLinks.link and Reputation.scores (bench/derive.py: 108 → 4 ms per cold
decision at 10,000 nodes); these tests hold them to the per-node definitions
over random states, also after the probes, coordinates and members change
between two decisions (the arrays are kept and updated from change logs).
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from hypercore.beacon.probe import PeerLinks
from hypercore.changes import KEPT as CHANGES_KEPT
from hypercore.membership.coordinates import CoordinateBook
from hypercore.membership.rpc_types import Coordinate
from hypercore.placement.links import REPORTED_TTL_S, OriginLinks
from hypercore.policy import NodeTable
from hypercore.reputation import Reputation

SELF = "n00"


def coordinate(rng: random.Random, dims: int = 8) -> Coordinate:
    return Coordinate(vec=[rng.uniform(-0.05, 0.05) for _ in range(dims)], error=0.2,
                      adjustment=rng.uniform(-2e-3, 1e-4), height=rng.uniform(1e-5, 1e-3))


def expected(links: OriginLinks, origin: str, names: tuple[str, ...]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"latency_ms": [], "jitter_ms": [], "packet_loss": []}
    for node in names:
        link = links.link(origin, node)
        for metric in out:
            value = getattr(link, metric)
            out[metric].append(math.nan if value is None else value)
    return out


def assert_same(links: OriginLinks, origin: str, names: tuple[str, ...]) -> None:
    got, want = links.arrays(origin, names), expected(links, origin, names)
    for metric, values in want.items():  # the same floats, not close ones: a rule's threshold sees no difference
        np.testing.assert_array_equal(got[metric], np.array(values), err_msg=f"{metric} from {origin}")


def random_state(rng: random.Random, n: int, clock: list[float]) -> tuple[OriginLinks, tuple[str, ...]]:
    names = tuple(f"n{i:02d}" for i in range(n))
    probes = PeerLinks()
    for peer in rng.sample(names[1:], n // 2):
        for _ in range(rng.randint(1, 6)):
            probes.record(peer, None if rng.random() < 0.2 else rng.uniform(1.0, 90.0))
    book = CoordinateBook()
    for name in names:
        roll = rng.random()
        if roll < 0.7:
            book.set(name, coordinate(rng))
        elif roll < 0.8:
            book.set(name, coordinate(rng, dims=rng.choice([3, 9])))  # not Serf's 8: worked out one by one
    links = OriginLinks(SELF, probes, book, clock=lambda: clock[0])
    for origin in rng.sample(names[1:], 3):
        links.remember_reported(origin, {p: [rng.uniform(1.0, 90.0), rng.choice([None, 2.0]), rng.choice([None, 1.0])]
                                         for p in rng.sample(names, n // 3)})
    return links, names


@pytest.mark.parametrize("seed", range(12))
def test_arrays_give_what_link_gives_for_every_node_from_every_origin(seed: int) -> None:
    rng = random.Random(seed)
    clock = [1000.0]
    links, names = random_state(rng, 30, clock)
    for origin in (SELF, *names[1:], "not-a-member"):
        assert_same(links, origin, names)
    assert_same(links, "n05", names[1:])  # this node not among the names (a table without it)


def test_arrays_follow_probes_coordinates_and_reports_that_change_between_decisions() -> None:
    rng = random.Random(99)
    clock = [1000.0]
    links, names = random_state(rng, 40, clock)
    for step in range(60):
        origin = rng.choice((SELF, *names[1:6]))
        assert_same(links, origin, names)
        kind = step % 5
        if kind == 0:
            links.probes.record(rng.choice(names[1:]), None if rng.random() < 0.3 else rng.uniform(1, 90))
        elif kind == 1:
            links.coordinates.set(rng.choice(names), rng.choice([None, coordinate(rng), coordinate(rng, 4)]))
        elif kind == 2:
            links.probes.forget_except(set(rng.sample(names, 35)))
        elif kind == 3:
            links.coordinates.forget_except(set(rng.sample(names, 38)))
        else:
            clock[0] += REPORTED_TTL_S / 2  # reports expire
    # More changes than the logs keep: the arrays are built again, not patched.
    for _ in range(CHANGES_KEPT + 10):
        links.probes.record(rng.choice(names[1:]), rng.uniform(1, 90))
        links.coordinates.set(rng.choice(names), coordinate(rng))
    assert links.probes.changes.since(0) is None and links.coordinates.changes.since(0) is None
    assert_same(links, SELF, names)
    assert_same(links, names[3], names)


def test_change_logs_name_what_changed_since_a_version() -> None:
    book = CoordinateBook()
    rng = random.Random(1)
    book.set("a", coordinate(rng))
    seen = book.version
    assert book.changes.since(seen) == []
    book.set("b", coordinate(rng))
    book.set("a", None)
    book.set("c", None)  # nothing there: no change
    assert book.changes.since(seen) == ["b", "a"]
    probes = PeerLinks()
    probes.record("x", 5.0)
    seen = probes.version
    probes.record("y", None)
    probes.forget_except({"y"})
    assert probes.changes.since(seen) == ["y", "x"]
    assert probes.stats("x") is None and probes.stats("y").packet_loss == 100.0


@pytest.mark.parametrize("seed", range(8))
def test_scores_array_gives_what_scores_gives(seed: int) -> None:
    rng = random.Random(seed)
    now = [5000.0]
    names = tuple(f"n{i:02d}" for i in range(40))
    attested = {n: rng.uniform(0.2, 0.9) for n in rng.sample(names, 5)}
    rep = Reputation(SELF, None, SimpleNamespace(), lambda: list(names[1:17]), attested.get, clock=lambda: now[0])
    for node in rng.sample(names, 12):
        for _ in range(rng.randint(1, 4)):
            rep.observe(node, rng.random() < 0.7, f"attempt {rng.random()}")
    for observer in rng.sample(names[1:], 4):
        rep.accept_view(observer, {"view": {s: {"score": rng.random()}
                                            for s in [*rng.sample(names, 15), "stranger", observer]}})
        now[0] += 40.0  # the first views age out of VIEW_TTL_S
    got = rep.scores_array(names)
    want = rep.scores(list(names))
    np.testing.assert_allclose(got, [want[n] for n in names], rtol=0, atol=0)
    assert rep.scores_array(names[5:]).tolist() == [want[n] for n in names[5:]]


def test_with_columns_is_with_values_for_whole_columns() -> None:
    records = [{"name": f"n{i}", "latency_ms": float(i), "reputation": 0.5} for i in range(5)]
    table = NodeTable.from_records(records)
    lat = np.array([3.0, np.nan, 1.0, 0.0, 7.5])
    rep = np.array([0.1, 0.2, np.nan, 0.4, 0.5])
    by_values = table.with_values("latency_ms", dict(zip(table.names, lat))).with_values(
        "reputation", dict(zip(table.names, rep)))
    by_columns = table.with_columns({"latency_ms": lat, "reputation": rep})
    for metric in ("latency_ms", "reputation"):
        np.testing.assert_array_equal(by_columns.columns[metric], by_values.columns[metric])
        np.testing.assert_array_equal(by_columns.unknown[metric], by_values.unknown[metric])
    with pytest.raises(ValueError, match="latency_ms: 4 values for 5 nodes"):
        table.with_columns({"latency_ms": lat[:4]})


def test_the_figures_a_forwarded_spawn_carries_are_the_nearest_peers_measured() -> None:
    rng = random.Random(5)
    probes = PeerLinks()
    for i in range(300):
        peer = f"p{i:03d}"
        for _ in range(3):
            probes.record(peer, None if i % 17 == 0 else rng.uniform(0.5, 200.0))  # every 17th never answers
    links = OriginLinks(SELF, probes, CoordinateBook())
    measured = sorted((s.latency_ms, p) for p in probes.peers() if (s := probes.stats(p)).latency_ms is not None)
    for limit in (1, 10, 256, 400):
        exported = links.export(limit)
        assert list(exported) == [p for _, p in measured[:limit]]
        first = measured[0][1]
        assert exported[first] == [probes.stats(first).latency_ms, probes.stats(first).jitter_ms,
                                   probes.stats(first).packet_loss]
    assert "p000" not in links.export(400) and probes.nearest(0) == []


@pytest.mark.parametrize("bad", [
    Coordinate(vec=[1e200] * 8, error=0.1, adjustment=0.0, height=1e-4),  # overflowed rtt_ms: OverflowError
    Coordinate(vec=[math.nan] + [0.0] * 7, error=0.1, adjustment=0.0, height=1e-4),
    Coordinate(vec=[0.0] * 8, error=0.1, adjustment=math.inf, height=1e-4),
    Coordinate(vec=[0.0] * 8, error=0.1, adjustment=0.0, height=-1e9),
    Coordinate(vec=[0.0] * 100_000, error=0.1, adjustment=0.0, height=1e-4),
    Coordinate(vec=[], error=0.1, adjustment=0.0, height=1e-4),
])
def test_a_members_absurd_coordinate_is_no_coordinate(bad: Coordinate) -> None:
    """A coordinate is what its member reports; one no RTT can come from is dropped, not used or crashed on."""
    rng = random.Random(3)
    book = CoordinateBook()
    book.set("good", coordinate(rng))
    book.set("liar", coordinate(rng))
    links = OriginLinks(SELF, PeerLinks(), book)
    names = (SELF, "good", "liar")
    links.arrays("good", names)
    book.set("liar", bad)
    assert "liar" not in book and book.rtt_ms("good", "liar") is None
    assert links.link("good", "liar").latency_ms is None and links.link("liar", "good").source == "unknown"
    assert math.isnan(links.arrays("good", names)["latency_ms"][2])
    assert_same(links, "good", names)
    assert_same(links, "liar", names)


def test_the_nearest_peers_with_equal_latencies_go_by_name() -> None:
    probes = PeerLinks()
    for peer, rtt in (("z", 5.0), ("b", 1.0), ("y", 5.0), ("x", 5.0), ("a", 9.0), ("w", 5.0)):
        probes.record(peer, rtt)
    assert probes.nearest(3) == ["b", "w", "x"] and probes.nearest(10) == ["b", "w", "x", "y", "z", "a"]


def test_arrays_and_priors_carried_across_membership_changes_stay_exact() -> None:
    """Members come and go between decisions: the kept arrays are carried to the new member list (newcomers read
    one by one), as are the attested priors; both must still give what the per-node definitions give."""
    rng = random.Random(11)
    clock = [1000.0]
    links, names = random_state(rng, 40, clock)
    attested = {n: rng.uniform(0.2, 0.9) for n in rng.sample(names, 8)}
    rep = Reputation(SELF, None, SimpleNamespace(), lambda: [], attested.get, clock=lambda: clock[0])
    for node in rng.sample(names, 10):
        rep.observe(node, rng.random() < 0.7, "attempt")
    members = list(names[:25])
    for step in range(40):
        current = tuple(sorted(members))
        assert_same(links, rng.choice((SELF, *current[1:4], "n39")), current)
        want = rep.scores(list(current))
        assert rep.scores_array(current).tolist() == [want[n] for n in current]
        # Between decisions: a member leaves or joins, and probes and coordinates move.
        if rng.random() < 0.5 and len(members) > 5:
            members.remove(rng.choice(members[1:]))
        else:
            members.append(rng.choice([n for n in (*names, f"new{step}") if n not in members]))
        links.probes.record(rng.choice(names[1:]), rng.uniform(1, 90))
        links.coordinates.set(rng.choice(members), rng.choice([None, coordinate(rng), coordinate(rng, 5)]))
        if step % 7 == 0:
            links.probes.record(members[-1], rng.uniform(1, 90))  # a newcomer already probed
