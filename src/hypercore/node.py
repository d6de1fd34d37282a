"""One node's rooms, wired together: everything but processes and sockets.

A `Node` holds the workload registry and runtime, the placement protocol,
failover, the policy engine and the cluster view, each handed only what it
needs. It has no Serf, no HTTP server and no beacon of its own: the agent
(hypercore.agent) adds those around it, and the in-process test harness
(tests/inprocess) runs several Nodes against a static view and an in-memory
transport instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon.probe import PeerLinks
from hypercore.beacon.tags import refresh_period
from hypercore.failover import Failover, Handles
from hypercore.identity.tokens import TokenVerifier
from hypercore.membership.coordinates import CoordinateBook
from hypercore.membership.view import ClusterView
from hypercore.metrics import AgentMetrics
from hypercore.placement import Scheduler
from hypercore.placement.directory_sync import Directory
from hypercore.placement.links import OriginLinks
from hypercore.policy import Policy, PolicyEngine
from hypercore.reputation import Reputation
from hypercore.runtime.manager import Capacity, WorkloadManager
from hypercore.store import WorkloadStore
from hypercore.transport import Transport
from hypercore.workload import WorkloadState

log = logging.getLogger("hypercore.agent")


class Node:
    def __init__(
        self,
        *,
        name: str,
        data_dir: Path,
        view: ClusterView,
        transport: Transport,
        engine: PolicyEngine,
        metrics: AgentMetrics,
        capacity: Capacity,
        tokens: TokenVerifier | None,
        insecure: bool = False,
        attempt_timeout: float = 15.0,
        respawn_on_node_failure: bool = False,
        failover_grace: float | None = None,
        max_workloads: int | None = 256,
        max_log_mb: int = 64,
        spawn_rate: float = 20.0,
        spawn_burst: int = 40,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.view = view
        self.transport = transport
        self.engine = engine
        self.metrics = metrics
        self.capacity = capacity
        self.tokens = tokens
        self.insecure = insecure
        # Set by whoever runs the node once it is part of the cluster (beacon published, members read).
        self.ready = False
        # The cap of each workload's log on disk (drivers) and of one `logs` answer (api).
        self.max_log_mb = max_log_mb
        self.max_log_bytes = max_log_mb * 1024 * 1024
        # Spawns per second one user may send to this node, and in one burst (api.ratelimit).
        self.spawn_rate, self.spawn_burst = spawn_rate, spawn_burst
        self.store = WorkloadStore(data_dir)
        self.manager = WorkloadManager(self.store, data_dir, {}, name, capacity=capacity, max_workloads=max_workloads)
        # Links as seen from an origin: this node's own probes of each peer, and Serf's network coordinates.
        self.probes = PeerLinks()
        # Reputation from evidence: this node's observations (signed with `key`) and the views of peers of its
        # probe panel, whose connections the probes keep open (a random peer of 100 cost a TLS handshake on
        # both sides per exchange: hypercore.reputation.service).
        self.reputation = Reputation(name, key, transport, lambda: self.probes.panel(view.peers(exclude=name)),
                                     prior=self._attested_prior)
        view.on_stale = lambda node: self.reputation.observe_once(node, False, "beacon stale")
        self.coordinates = CoordinateBook()
        self.links = OriginLinks(name, self.probes, self.coordinates)
        # Where the request ids this node holds were placed (hypercore.placement.directory).
        self.directory = Directory(node_name=name, data_dir=data_dir, view=view, transport=transport,
                                   local_record=self._local_record)
        self.scheduler = Scheduler(
            node_name=name, view=view, engine=engine, metrics=metrics, transport=transport,
            attempt_timeout=attempt_timeout, manager=self.manager,
            reputation=self.reputation, links=self.links, directory=self.directory,
        )
        handles = Handles(name=name, data_dir=data_dir, view=view, transport=transport, workloads=self.store,
                          place=self.scheduler.place, holders_of=self.scheduler.holders_of, stop=self._stop_workload,
                          registry=metrics.registry,
                          flagged=respawn_on_node_failure, observe=self.reputation.observe)
        self.failover = Failover(handles) if failover_grace is None else Failover(handles, grace=failover_grace)

    def _attested_prior(self, node: str) -> float | None:
        """The prior reputation the cluster CA attested for `node` (verified with its admission)."""
        view = self.view.node(node)
        admission = view.beacon.admission if view is not None and view.beacon is not None else None
        return admission.reputation if admission is not None else None

    def member_hosts(self) -> list[str]:
        """The hosts of the admitted members' API addresses (hypercore.membership.hosts.MemberHosts)."""
        return [p.host for n in self.view.peers() if (p := self.view.peer(n)) is not None]

    def _local_record(self, workload_id: str) -> dict[str, Any] | None:
        record = self.store.get(workload_id)
        return record.to_dict() if record is not None else None

    async def _stop_workload(self, workload_id: str, reason: str) -> None:
        await self.manager.stop(workload_id, reason=reason)

    def log_policy(self, policy: Policy, how: str) -> None:
        log.info("loaded policy", extra={"fields": {"name": policy.name, "mode": policy.mode, "how": how}})

    def refresh_gauges(self) -> None:
        for status, count in self.view.status_counts().items():
            self.metrics.members.labels(status=status).set(count)
        self.metrics.beacon_refresh.set(refresh_period(self.view.size()))
        self.metrics.beacon_max_age.set(self.view.max_age())
        counts: dict[str, int] = {}
        for record in self.manager.list():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        for state in WorkloadState:
            self.metrics.workloads.labels(state=state.value).set(counts.get(state.value, 0))

    async def close(self) -> None:
        await self.scheduler.close()
        self.directory.close()
        await self.failover.close()
        await self.transport.close()
        await self.manager.close()
