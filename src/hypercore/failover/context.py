"""What failover needs from the rest of the node — and nothing else — plus the state its parts share.

Failover gets narrow handles, not the agent: a membership view, the node
transport, the workload registry, a way to place and a way to stop a
workload, a metrics registry. The same parts run in the agent and, with an
in-process transport and a static view, in tests/inprocess.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from hypercore.failover.model import ASK_TIMEOUT, FLAG_TAG, GRACE, K, Move
from hypercore.failover.store import ReplicaStore
from hypercore.loops import TaskSet, Wakeup
from hypercore.membership.view import ClusterView
from hypercore.placement.model import Placement
from hypercore.policy import Policy
from hypercore.store import WorkloadStore
from hypercore.transport import PeerUnreachable, Transport
from hypercore.workload import WorkloadSpec

log = logging.getLogger("hypercore.failover")


class PlaceFn(Protocol):
    def __call__(self, spec: WorkloadSpec, policy: Policy | None, *, request_id: str | None = None,
                 owner: str | None = None) -> Awaitable[Placement]: ...


StopFn = Callable[[str, str], Awaitable[Any]]  # (workload id, reason) → stops it here


@dataclass(frozen=True)
class Handles:
    name: str
    data_dir: Path
    view: ClusterView
    transport: Transport
    workloads: WorkloadStore
    place: PlaceFn
    holders_of: Callable[[str], list[str]]  # who may place a request id, its owner first (Scheduler.holders_of)
    stop: StopFn
    registry: CollectorRegistry
    flagged: bool  # this node carries --respawn-on-node-failure
    observe: Callable[[str, bool, str], Any] | None = None  # evidence for reputation: (node, ok, what)


class FailoverMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.respawns = Counter("hypercore_failover_respawns", "Workloads of failed nodes placed again, by result.",
                                ["result"], registry=r)
        self.moved_away = Counter("hypercore_failover_moved_away",
                                  "Old copies stopped here because they were moved while this node was failed.",
                                  registry=r)
        self.held = Gauge("hypercore_failover_replicas_held", "Other nodes' manifests held here.", registry=r)
        self.pushes = Counter("hypercore_failover_manifest_pushes", "Manifest pushes to buddies, by outcome.",
                              ["outcome"], registry=r)


class Context:
    """The handles plus the state that replication, respawn and return share."""

    def __init__(self, handles: Handles, k: int = K, grace: float = GRACE) -> None:
        self.h = handles
        self.name = handles.name
        self.k = k
        self.grace = grace
        self.flagged = handles.flagged
        self.replicas = ReplicaStore(handles.data_dir)
        self.metrics = FailoverMetrics(handles.registry)
        self.tasks = TaskSet()
        self.acting: set[str] = set()  # owners whose workloads this node is placing right now
        # The two loops sleep until what they read changes (or their own next deadline): replication on
        # the registry, the buddies and `dirty`; the watch on statuses and the manifests and moves held.
        self.replication_wakeup, self.watch_wakeup = Wakeup(), Wakeup()
        handles.workloads.changed.subscribe(self.replication_wakeup.set)
        handles.view.membership_changed.subscribe(self.replication_wakeup.set)
        handles.view.membership_changed.subscribe(self.watch_wakeup.set)
        self.replicas.changed.subscribe(self.watch_wakeup.set)
        self.dirty = True  # this node's manifest must be rebuilt (moves changed)

    @property
    def dirty(self) -> bool:
        return self._dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        if value:
            self.replication_wakeup.set()

    def alive(self) -> list[str]:
        """Alive, admitted nodes with an API (this one included), sorted."""
        return self.h.view.peers()

    def status(self, node: str) -> str | None:
        view = self.h.view.node(node)
        return view.status if view is not None else None

    def flagged_nodes(self) -> set[str]:
        """Members that publish the failover flag (Serf tag fo=1), this node included when flagged."""
        tagged = self.h.view.tagged(FLAG_TAG, "1")
        return tagged | {self.name} if self.flagged else tagged - {self.name}

    async def ask(self, node: str, method: str, path: str, body: Any = None, timeout: float = ASK_TIMEOUT) -> Any | None:
        """JSON of a 200 answer of `node`, or None (unreachable, refused, not JSON)."""
        try:
            r = await self.h.transport.request(node, method, path, json_body=body, timeout=timeout)
        except PeerUnreachable:
            return None
        if r.status != 200:
            return None
        try:
            return r.json()
        except ValueError:
            return None

    def record_move(self, move: Move) -> None:
        if self.replicas.record_move(move):
            self.dirty = True  # goes into our manifest, hence to our buddies
