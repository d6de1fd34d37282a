"""Rendezvous hashing (placement.ids.rendezvous_rank): who owns and holds a request id, who holds a manifest.

Every node must compute the same order from the same members, the order must
spread keys evenly, and a member's coming or going may move only the keys it
ranks first for. The weights are computed with NumPy over all members at
once (bench/holders.py); this file pins them to a plain-Python reading of
their definition.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from hypercore.placement.directory import HOLDERS, holders_of, pointer_of
from hypercore.placement.ids import home_of, rendezvous_rank, request_rank, workload_id_for

MASK = (1 << 64) - 1


def weight(key: str, node: str) -> int:
    """The definition, in plain Python: MurmurHash3's fmix64 of seed(node) XOR digest(key)."""
    def first8(text: str) -> int:
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")

    h = first8(node) ^ first8(key)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    h ^= h >> 33
    return h


def names(n: int) -> list[str]:
    return [f"node-{i:03d}" for i in range(n)]


def test_the_order_is_the_definitions_highest_weight_first() -> None:
    nodes = names(40)
    for key in (f"k{i}" for i in range(50)):
        assert rendezvous_rank(key, nodes) == sorted(nodes, key=lambda n: weight(key, n), reverse=True)


def test_the_first_n_are_the_full_orders_first_n_whatever_the_input_order() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 5, 17, 100):
        nodes = names(size)
        for key in (f"key-{i}" for i in range(30)):
            full = rendezvous_rank(key, nodes)
            shuffled = nodes[:]
            rng.shuffle(shuffled)
            assert rendezvous_rank(key, shuffled + nodes[:2]) == full  # order and repeats do not matter
            assert rendezvous_rank(key, tuple(shuffled)) == full
            for n in (0, 1, 2, 3, size, size + 3):
                assert rendezvous_rank(key, shuffled, n) == full[:n]
    assert rendezvous_rank("k", []) == [] and rendezvous_rank("k", [], 3) == []


def test_owners_and_holders_spread_evenly() -> None:
    nodes = names(100)
    keys = [f"alice/job-{i}" for i in range(20_000)]
    owned = Counter(request_rank(k, nodes, 1)[0] for k in keys)
    held = Counter(h for k in keys for h in holders_of(k, nodes))
    assert len(owned) == 100 and min(owned.values()) >= 120 and max(owned.values()) <= 290  # 200 expected
    assert min(held.values()) >= 450 and max(held.values()) <= 750  # 600 expected


def test_an_owners_buddies_differ_from_one_request_id_to_the_next() -> None:
    """Not a ring: a node's keys are spread over many second holders, so an owner's death spreads its work."""
    nodes = names(100)
    seconds = Counter(request_rank(k, nodes, 2)[1] for k in (f"k{i}" for i in range(20_000))
                      if request_rank(k, nodes, 1)[0] == "node-042")
    assert sum(seconds.values()) > 100 and len(seconds) >= 50


@pytest.mark.parametrize("a,b", [("node-001", "node-002"), ("a", "b"), ("node-010", "node-100")])
def test_two_nodes_win_against_each_other_about_as_often(a: str, b: str) -> None:
    keys = [workload_id_for(f"u/{i}") for i in range(4000)]
    wins = sum(rendezvous_rank(k, [a, b], 1) == [a] for k in keys)
    assert 1800 <= wins <= 2200


def test_a_departure_moves_only_what_the_leaving_node_held_and_an_arrival_only_what_it_takes() -> None:
    nodes = names(60)
    keys = [f"bob/{i}" for i in range(3000)]
    before = {k: holders_of(k, nodes) for k in keys}
    gone = "node-031"
    after = {k: holders_of(k, [n for n in nodes if n != gone]) for k in keys}
    for k in keys:
        if gone not in before[k]:
            assert after[k] == before[k]
        else:  # the others keep their order; the next one moves up
            assert after[k][: HOLDERS - 1] == [n for n in before[k] if n != gone]
    joined = {k: holders_of(k, [*nodes, "newcomer"]) for k in keys}
    for k in keys:
        if "newcomer" not in joined[k]:
            assert joined[k] == before[k]
        else:
            assert [n for n in joined[k] if n != "newcomer"] == before[k][: HOLDERS - 1]


def test_equal_weights_are_ranked_by_name_whatever_is_asked_for() -> None:
    """Two names whose seeds agree weigh the same for every key (2^32 work to find, for someone who names two
    admitted nodes); every node must still rank them alike, in full or its first n."""
    from hypercore.placement.ids import NodeSet

    nodes = NodeSet([f"m{i:02d}" for i in range(12)])
    nodes._seeds[[3, 7, 9]] = nodes._seeds[5]  # m03, m05, m07, m09: one seed
    for key in (f"k{i}" for i in range(300)):
        full = nodes.rank(key)
        tied = [n for n in full if n in ("m03", "m05", "m07", "m09")]
        assert tied == ["m03", "m05", "m07", "m09"]
        start = full.index("m03")
        assert full[start:start + 4] == tied
        for n in range(1, 13):
            assert nodes.rank(key, n) == full[:n]


def test_a_request_id_that_names_its_home_is_held_there_and_by_the_homes_own_buddies() -> None:
    # The home's buddies are the rendezvous order of its name (as failover ranks a node's buddies): the nodes
    # it talks to anyway, so a claim goes out on open connections, not on new ones to nodes a hash picked.
    nodes = names(50)
    rng = random.Random(7)
    for i in range(300):
        home = rng.choice(nodes)
        key = f"alice/{i:04d}-{rng.getrandbits(32):08x}@{home}"
        assert home_of(key) == home
        held = holders_of(key, nodes)
        assert held == [home, *[x for x in rendezvous_rank(home, nodes) if x != home][:HOLDERS - 1]]
        assert holders_of(f"bob/{i}@{home}", nodes) == held  # every request of that home: the same three
        # The home gone, its first buddy places the request and both buddies still hold it.
        assert holders_of(key, [n for n in nodes if n != home])[:2] == held[1:]
        # A lookup by workload id asks the workload id's first node: it gets a copy unless it holds the entry.
        first = rendezvous_rank(workload_id_for(key), nodes, 1)[0]
        assert pointer_of(key, nodes) == (None if first in held else first)
    assert pointer_of("alice/job-1", nodes) is None  # an entry of a hashed id is where lookups ask already


def test_a_home_that_is_no_member_or_a_user_name_with_an_at_is_no_home() -> None:
    nodes = names(10)
    for key in ("alice@example.com/job-1", "alice/job-1"):
        assert holders_of(key, nodes) == request_rank(key, nodes, HOLDERS)
    # A home that is not a member: its buddies hold it, the first of them owns it (as once the home leaves).
    assert holders_of("alice/job-1@node-999", nodes) == rendezvous_rank("node-999", nodes, HOLDERS)
    assert home_of("alice@example.com/job-1") is None and home_of("alice/job-1@") is None
    assert home_of("a@b/c@node-001") == "node-001"
