"""What this node placed that the chosen nodes' beacons do not show yet.

A beacon carries a node's load, but it is published at most every 2 s and
gossiped; an origin that waited for it would send a whole burst of spawns to
one node. So the origin counts its own placements against the node until the
node's beacon shows them. Whether a beacon shows a placement is decided on the
*node's* clock only: the node answers an attempt with the time it accepted the
workload (`created_at`), and its beacon says when it was measured, to the
millisecond. No two machines' clocks are compared.

A placement also stops counting when the workload is stopped through this node,
and after UNREPORTED_S in any case: a workload that ended before its node
published again never shows in a beacon.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

UNREPORTED_S = 10.0  # how long a placement counts at most (a beacon shows news within ≈ 6 s: 2 s + gossip + Serf's 3 s)


@dataclass(eq=False)
class Counted:
    node: str
    workload_id: str
    cpu: float
    mem: float
    at: float = field(default_factory=time.time)  # this node's clock: the cutoff runs on it
    accepted_at: float | None = None  # the chosen node's clock, from its answer; None while the attempt is out


class Unreported:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_node: dict[str, list[Counted]] = defaultdict(list)

    def count(self, node: str, workload_id: str, cpu: float, mem: float) -> Counted:
        """Count a placement against `node` now, before anything awaits: concurrent decisions must see it."""
        counted = Counted(node, workload_id, cpu, mem, at=self._clock())
        self._by_node[node].append(counted)
        return counted

    def accepted(self, counted: Counted, workload: dict[str, Any]) -> None:
        """The node took it: from now on its own beacons say whether they show it."""
        when = workload.get("created_at")
        if isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
            counted.accepted_at = float(when)

    def uncount(self, counted: Counted) -> None:
        """The attempt failed, or another node holds the workload: it takes nothing there."""
        entries = self._by_node.get(counted.node, [])
        if counted in entries:
            entries.remove(counted)

    def released(self, workload_id: str) -> None:
        """The workload was stopped through this node: whatever this node counted for it is free again."""
        for entries in self._by_node.values():
            entries[:] = [c for c in entries if c.workload_id != workload_id]

    def per_node(self, shown: Callable[[str], float | None]) -> dict[str, tuple[int, float, float]]:
        """(count, cpu, mem) per node of what its beacon does not show; `shown(node)`: when its beacon was
        measured (its clock), None without one."""
        cutoff = self._clock() - UNREPORTED_S
        out: dict[str, tuple[int, float, float]] = {}
        for node in list(self._by_node):
            entries = self._by_node[node]
            entries[:] = [c for c in entries if c.at > cutoff]
            if not entries:
                del self._by_node[node]
                continue
            measured = shown(node)
            fresh = [c for c in entries
                     if c.accepted_at is None or measured is None or c.accepted_at > measured]
            if fresh:
                out[node] = (len(fresh), sum(c.cpu for c in fresh), sum(c.mem for c in fresh))
        return out
