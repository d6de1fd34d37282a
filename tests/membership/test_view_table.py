"""The view's node list, peers and engine table follow changes one member at a time (issue 10).

A beacon refresh, a join or a departure built the engine's table again from every member's record (every
record validated: 138 ms a change at 10,000 members, bench/view.py), re-sorted every view and counted every
member again. Now each change costs in proportion to what changed; these tests hold the kept state to what
a view made from scratch says after any sequence of changes (real keys, signatures and CA admissions).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from hypercore.beacon import keys
from hypercore.beacon.tags import Admission, Beacon, encode
from hypercore.identity.admission import admission_check
from hypercore.identity.pki import admission_message, create_ca, load_ca, load_ca_key
from hypercore.membership.rpc import Member
from hypercore.membership.view import ClusterView, NodeView
from hypercore.policy import NodeRecord, NodeTable

NOW = float(int(time.time()))


class Members:
    """Members with real beacons, each key admitted by a real CA until `not_after`."""

    def __init__(self, ca_dir: Path) -> None:
        create_ca(ca_dir)
        self.ca = load_ca(ca_dir / "ca.pem")
        _, self._ca_key = load_ca_key(ca_dir)
        self._keys: dict[str, object] = {}

    def make(self, name: str, ts: float, *, status: str = "alive", not_after: float = NOW + 86_400,
             rng: random.Random | None = None, forged: bool = False) -> Member:
        rng = rng or random.Random(name)
        key = self._keys.setdefault(name, keys.generate())
        signed_for = int(not_after)
        admission = Admission(signed_for, keys.sign(self._ca_key, admission_message(name, keys.public_bytes(key),
                                                                                     signed_for)))
        beacon = Beacon(api=f"127.0.0.1:{8000 + len(name)}", timestamp=ts, queue_depth=float(rng.randrange(5)),
                        price_per_gb=round(rng.uniform(0, 1), 3), cpu_free=float(rng.randrange(1, 8)), cpu_total=8.0,
                        capabilities=rng.choice([("exec",), ("exec", "gpu"), ()]),
                        region=rng.choice([None, "eu", "us"]))
        tags = encode(beacon, name, keys.generate() if forged else key, admission)
        return Member(name=name, addr="127.0.0.1", port=7946, tags=tags, status=status)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Members:
    return Members(tmp_path_factory.mktemp("ca") / "ca")


def _without_limit(view: NodeView) -> NodeView:
    return replace(view, problem=re.sub(r"beacon is \d+ s old \(max \d+ s\)", "old", view.problem)) if view.problem else view


def assert_as_from_scratch(view: ClusterView, members_now: list[Member], ca: object, now: float) -> None:
    fresh = ClusterView(admit=admission_check(ca), clock=lambda: now)  # type: ignore[arg-type]
    fresh.update(members_now)
    assert view.size() == fresh.size()
    # A stale beacon's message says its age and the age limit at the moment it was checked (a kept view is
    # checked again only when its verdict may change, not when the limit merely moves): compared without them.
    assert [_without_limit(n) for n in view.nodes()] == [_without_limit(n) for n in fresh.nodes()]
    assert view.peers() == fresh.peers() and view.peers(exclude="m003") == fresh.peers(exclude="m003")
    assert view.size() == fresh.size()
    kept, built = view.table(), fresh.table()
    assert kept.names == built.names and kept.statuses == built.statuses
    assert np.array_equal(kept.alive, built.alive) and np.array_equal(kept.name_rank, built.name_rank)
    for metric, column in built.columns.items():
        assert np.array_equal(kept.columns[metric], column, equal_nan=True), metric
    assert [kept.cap_sets[i] for i in kept.cap_ids] == [built.cap_sets[i] for i in built.cap_ids]
    assert kept.region_of() == built.region_of()


@pytest.mark.parametrize("seed", range(6))
def test_after_any_changes_the_view_says_what_a_view_made_from_scratch_says(members: Members, seed: int) -> None:
    rng = random.Random(seed)
    clock = [NOW]
    view = ClusterView(admit=admission_check(members.ca), clock=lambda: clock[0])
    current = {f"m{i:03d}": members.make(f"m{i:03d}", NOW - rng.uniform(0, 40), rng=rng) for i in range(30)}
    view.update(current.values())
    assert_as_from_scratch(view, list(current.values()), members.ca, clock[0])
    for step in range(40):
        kind = rng.choice(["refresh", "refresh", "status", "join", "reap", "forged", "time", "expiring", "full"])
        name = rng.choice(sorted(current)) if current else "m000"
        if kind == "refresh":
            current[name] = members.make(name, clock[0], rng=rng)
            view.upsert([current[name]])
        elif kind == "status":
            current[name] = members.make(name, clock[0], rng=rng, status=rng.choice(["failed", "left", "alive"]))
            view.upsert([current[name]])
        elif kind == "join":
            new = f"m{rng.randrange(30, 60):03d}"
            current[new] = members.make(new, clock[0], rng=rng)
            view.upsert([current[new]])
        elif kind == "reap" and current:
            del current[name]
            view.remove([name])
        elif kind == "forged":  # a beacon that does not verify: the member leaves the table and the peers
            current[name] = members.make(name, clock[0], rng=rng, forged=True)
            view.upsert([current[name]])
        elif kind == "time":  # admissions end; after a long wait, every beacon not refreshed is stale. How old
            # a beacon may be grows with the cluster's size (170-490 s at 20-60 members), which a kept view takes
            # up for the beacons whose verdict it flips: ages stay clear of that range, below or above it.
            clock[0] += rng.choice([2.0, 2.0, 2.0, 1000.0])
        elif kind == "expiring":  # admitted until shortly: the admission ends while nothing changes
            current[name] = members.make(name, clock[0], rng=rng, not_after=clock[0] + 20)
            view.upsert([current[name]])
        else:  # Serf's full read: every member again, most as they were
            view.update(current.values())
        if step % 3 == 0 or kind == "time":
            assert_as_from_scratch(view, list(current.values()), members.ca, clock[0])
    assert_as_from_scratch(view, list(current.values()), members.ca, clock[0])


def test_a_beacon_refresh_validates_one_record_and_keeps_the_name_order(members: Members) -> None:
    view = ClusterView(admit=admission_check(members.ca), clock=lambda: NOW)
    names = [f"m{i:03d}" for i in range(200)]
    view.update(members.make(n, NOW) for n in names)
    before = view.table()
    with mock.patch.object(NodeRecord, "model_validate", wraps=NodeRecord.model_validate) as validate, \
            mock.patch.object(NodeTable, "from_records", wraps=NodeTable.from_records) as built:
        view.upsert([members.make("m100", NOW + 1, rng=random.Random(5))])
        after = view.table()
        assert validate.call_count == 1  # the refreshed member's record; it was all 200
        view.upsert([members.make("m050x", NOW)])  # a join
        view.remove(["m007"])  # a departure
        last = view.table()
        assert validate.call_count == 2 and built.call_count == 0  # patched, never built again
    assert after is not before and after.names is before.names  # the same members: names, index, order kept
    assert list(last.names) == sorted(set(names) - {"m007"} | {"m050x"})
    assert view.table() is last  # nothing changed: the same table
