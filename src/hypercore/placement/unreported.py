"""What this node placed that the chosen nodes' beacons do not show yet.

A beacon carries a node's load as it was when published, and a spawn is no
news (hypercore.beacon.publisher): the next beacon comes with the refresh
(30 s up to 11 nodes, longer in larger clusters), when a workload that came
and went makes one, or when free capacity drops a level. So the origin counts
its own placements against the node until a beacon of that node measured in a
later second than the placement arrives, and at most one refresh period and
UNREPORTED_S (a beacon lost on the way must not make it count for ever).

That rule over-counts on purpose, and measurably so: a beacon published in the
very second of a placement already shows it, yet the placement still counts
until the next beacon (at least 2 s later). Counted exactly instead (the
node's acceptance time against its beacon's, both by its clock), 200 spawns
sent at once through one node of three put 101-130 on that node, over the 100
that `tests/cluster/test_exactly_once.py` allows: the owners placing at once
learn of each other's placements only from beacons, and counting their own
twice for a second or two is what keeps them apart. What must not over-count
is a workload that is gone: one stopped through this node stops counting at
once, and its node publishes a beacon when a workload came and went between
two beacons (hypercore.beacon.publisher), so nothing counts for long after it
ended.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

UNREPORTED_S = 10.0  # beyond the refresh period: a beacon shows news within ≈ 6 s (2 s + gossip + Serf's 3 s)


@dataclass(eq=False)
class Counted:
    node: str
    workload_id: str
    cpu: float
    mem: float
    at: float  # when it was counted, by this node's clock


QUEUE_DEPTH_HEADER = "x-hypercore-queue-depth"  # the chosen node's unfinished workloads, in its answer to an attempt
MAX_ANSWERED_DEPTH = 10_000_000  # a figure above this is no queue depth: ignored


class Unreported:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_node: dict[str, list[Counted]] = defaultdict(list)
        self._answered: dict[str, tuple[float, int]] = {}  # node -> (when, its queue depth), from an attempt's answer

    def answered(self, node: str, queue_depth: object) -> None:
        """The queue depth `node` gave in its answer to an attempt (its own count of unfinished workloads).

        Fresher than its beacon until the next one, and unlike this node's count it includes what the other
        owners placed there: in a burst no beacon is news, and each owner spread its share by its own count
        alone, against a latency advantage of the receiving node (3 nodes, 200 spawns at once: 81 / 63 / 56,
        up to 115 of 200 on a loaded machine). The node's word about its load, as its beacon is.
        """
        try:
            depth = int(str(queue_depth))
        except ValueError:
            return
        if 0 <= depth <= MAX_ANSWERED_DEPTH:
            self._answered[node] = (self._clock(), depth)

    def answered_after(self, beacon_time: Callable[[str], float | None],
                       refresh: float = 0.0) -> dict[str, tuple[float, int]]:
        """(when, queue depth) of the answers newer than the node's beacon; older ones are forgotten, and so
        are those older than a refresh period and UNREPORTED_S (a node that left publishes no newer beacon)."""
        cutoff = self._clock() - refresh - UNREPORTED_S
        out = {}
        for node, (at, depth) in list(self._answered.items()):
            measured = beacon_time(node)
            if at <= cutoff or (measured is not None and measured >= at):
                del self._answered[node]
            else:
                out[node] = (at, depth)
        return out

    def count(self, node: str, workload_id: str, cpu: float, mem: float) -> Counted:
        """Count a placement against `node` now, before anything awaits: concurrent decisions must see it."""
        counted = Counted(node, workload_id, cpu, mem, at=self._clock())
        self._by_node[node].append(counted)
        return counted

    def accepted(self, counted: Counted) -> None:
        """The chosen node accepted it (its answer came now): it counts until a beacon measured in a later
        second than now. Counted from the decision, a beacon the node measured between the decision and
        its acceptance (over a second apart on a loaded machine) showed neither and yet ended the count:
        the node's capacity looked free, and `policy explain --live` ranked a full node (seen in CI)."""
        counted.at = self._clock()

    def uncount(self, counted: Counted) -> None:
        """The attempt failed, or another node holds the workload: it takes nothing there."""
        entries = self._by_node.get(counted.node, [])
        if counted in entries:
            entries.remove(counted)

    def released(self, workload_id: str) -> None:
        """The workload was stopped through this node: whatever this node counted for it is free again."""
        for entries in self._by_node.values():
            entries[:] = [c for c in entries if c.workload_id != workload_id]

    def per_node(self, shown: Callable[[str], float | None], refresh: float = 0.0) -> dict[str, tuple[int, float, float]]:
        """(count, cpu, mem) per node of what its beacon does not show; `shown(node)`: when its beacon was
        measured (its clock), None without one; `refresh`: the cluster's beacon refresh period."""
        cutoff = self._clock() - refresh - UNREPORTED_S
        out: dict[str, tuple[int, float, float]] = {}
        for node in list(self._by_node):
            entries = self._by_node[node]
            entries[:] = [c for c in entries if c.at > cutoff]
            if not entries:
                del self._by_node[node]
                continue
            measured = shown(node)
            since = math.floor(measured) if measured is not None else cutoff  # its second: see the docstring
            fresh = [c for c in entries if c.at >= since]
            if fresh:
                out[node] = (len(fresh), sum(c.cpu for c in fresh), sum(c.mem for c in fresh))
        return out
