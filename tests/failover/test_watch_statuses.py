"""Failover's watch follows members' statuses a change at a time (issue 10: every 5 s it built a dict of every
member's status, about 1 ms at 10,000 members, though statuses change rarely).

The watch's answer, each member's status and the peers back from failed since the last tick, must be what
comparing two full snapshots gave, after any sequence of joins, status changes, refreshes and reaps.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from hypercore.failover.respawn import Respawner
from hypercore.membership.rpc import Member
from hypercore.membership.view import ClusterView

STATUSES = ("alive", "failed", "left", "leaving")


def member(name: str, status: str, serial: int) -> Member:
    return Member(name=name, addr="127.0.0.1", port=7946, tags={"x": str(serial)}, status=status)


def watcher(view: ClusterView) -> Respawner:
    ctx = SimpleNamespace(h=SimpleNamespace(view=view), name="me")
    return Respawner(ctx, on_peers_back=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(30))
def test_the_watch_agrees_with_full_snapshots(seed: int) -> None:
    rng = random.Random(seed)
    view = ClusterView()
    watch = watcher(view)
    names = [f"n{i}" for i in range(12)] + ["me"]
    previous: dict[str, str] = {}
    serial = 0
    for _step in range(60):
        for _ in range(rng.randint(0, 4)):
            serial += 1
            name, roll = rng.choice(names), rng.random()
            if roll < 0.15:
                view.remove([name])
            elif roll < 0.3:  # a full read: some members missing from it are reaped
                view.update([member(n, rng.choice(STATUSES), serial) for n in names if rng.random() < 0.9])
            else:  # a change of status, or only of tags (a refresh)
                known = view.status(name)
                status = rng.choice(STATUSES) if known is None or rng.random() < 0.5 else known
                view.upsert([member(name, status, serial)])
        if rng.random() < 0.05:
            watch._statuses_version = -1  # as when the log no longer reaches back: a full read
        statuses, back = watch._follow_statuses()
        snapshot = {n.name: n.status for n in view.nodes()}
        assert statuses == snapshot
        assert back == sorted(n for n, s in snapshot.items() if n != "me" and s == "alive" and previous.get(n) == "failed")
        previous = snapshot


def test_a_tick_with_no_status_change_reads_no_member() -> None:
    view = ClusterView()
    view.update([member(f"n{i}", "alive", 0) for i in range(50)])
    watch = watcher(view)
    watch._follow_statuses()
    view.upsert([member("n3", "alive", 1)])  # a refresh: tags only
    view.nodes = None  # type: ignore[method-assign]  # a full read would fail now
    statuses, back = watch._follow_statuses()
    assert len(statuses) == 50 and back == []
    view.upsert([member("n4", "failed", 2)])
    view.upsert([member("n4", "alive", 3)])
    view.upsert([member("n5", "failed", 3)])
    statuses, back = watch._follow_statuses()
    assert statuses["n5"] == "failed" and back == []  # n4 failed and came back between two ticks: not seen as back
    view.upsert([member("n5", "alive", 4)])
    assert watch._follow_statuses()[1] == ["n5"]
