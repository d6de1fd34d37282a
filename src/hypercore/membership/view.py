"""This node's view of the cluster: Serf members plus their verified beacon data.

Members come from Serf; beacon metrics come from each member's tags and are
trusted only after the signature, range and freshness checks of
beacon.tags.decode. Anything else is "no beacon data" for that node: its
metrics are unknown to the engine, the cause is counted, and logged once per
node and cause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from hypercore.beacon.tags import MAX_AGE_S, Beacon, BeaconInvalid, decode
from hypercore.membership.rpc import Member
from hypercore.policy.nodes import NodeTable

log = logging.getLogger("hypercore.view")


@dataclass(frozen=True)
class NodeView:
    name: str
    status: str
    addr: str
    beacon: Beacon | None
    problem: str | None  # why there is no beacon data, when there is none

    @property
    def api_url(self) -> str | None:
        if self.beacon is None:
            return None
        api = self.beacon.api
        host, _, port = api.rpartition(":")
        host = host or self.addr
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def record(self) -> dict[str, Any]:
        """The node as the policy engine takes it (and `cluster metrics --json` prints it)."""
        b = self.beacon
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        for key in ("latency_ms", "jitter_ms", "packet_loss", "price_per_gb", "reputation", "queue_depth"):
            out[key] = getattr(b, key) if b else None
        out["capabilities"] = list(b.capabilities) if b else None
        for key in ("cpu_total", "cpu_free", "mem_total_mb", "mem_free_mb"):
            out[key] = getattr(b, key) if b else None
        out["beacon_id"] = b.beacon_id if b else None
        out["api"] = self.api_url
        return out


class ClusterView:
    """Members and beacons, refreshed from Serf by the agent."""

    def __init__(self, invalid_counter: Counter | None = None, clock: Callable[[], float] = time.time) -> None:
        self._members: dict[str, Member] = {}
        self._verified: dict[tuple[str, str], Beacon | BeaconInvalid] = {}
        self._logged: set[tuple[str, str]] = set()
        self._invalid = invalid_counter
        self._clock = clock
        # The engine's snapshot, rebuilt only when members or beacons change or
        # a beacon in it goes stale, not on every decision.
        self._table: NodeTable | None = None
        self._table_valid_until = 0.0

    def update(self, members: Iterable[Member]) -> None:
        new = {m.name: m for m in members}
        if new != self._members:
            self._table = None
        self._members = new
        # Forget verifications of signatures no longer published.
        live = {(m.name, m.tags.get("sig", "")) for m in self._members.values()}
        self._verified = {k: v for k, v in self._verified.items() if k in live}

    def _beacon(self, member: Member, now: float) -> tuple[Beacon | None, str | None]:
        key = (member.name, member.tags.get("sig", ""))
        cached = self._verified.get(key)
        if cached is None:
            try:
                cached = decode(member.tags, member.name, now)
            except BeaconInvalid as exc:
                cached = exc
            self._verified[key] = cached
        if isinstance(cached, Beacon):
            # The signature stays valid; freshness must be checked at every read.
            age = now - cached.timestamp
            if age > MAX_AGE_S:
                return None, self._note(member.name, BeaconInvalid("stale", f"beacon is {age:.0f} s old"))
            return cached, None
        return None, self._note(member.name, cached)

    def _note(self, node: str, exc: BeaconInvalid) -> str:
        if (node, exc.cause) not in self._logged:
            self._logged.add((node, exc.cause))
            if self._invalid is not None:
                self._invalid.labels(cause=exc.cause).inc()
            log.warning("no beacon data for node", extra={"node": node, "cause": exc.cause, "detail": str(exc)})
        return f"{exc.cause}: {exc}"

    def nodes(self) -> list[NodeView]:
        now = self._clock()
        out = []
        for member in self._members.values():
            beacon, problem = self._beacon(member, now)
            out.append(NodeView(member.name, member.status, member.addr, beacon, problem))
        return sorted(out, key=lambda n: n.name)

    def table(self, queue_extra: Mapping[str, int] | None = None) -> NodeTable:
        """The nodes as a policy-engine snapshot (cached; see __init__).

        `queue_extra` adds workloads a scheduler placed that a node's beacon
        does not count yet, so a burst of spawns does not all pile onto the
        node that looked emptiest a moment ago.
        """
        now = self._clock()
        if self._table is None or now >= self._table_valid_until:
            nodes = self.nodes()
            self._table = NodeTable.from_records([n.record() for n in nodes])
            expiries = [n.beacon.timestamp + MAX_AGE_S for n in nodes if n.beacon is not None]
            self._table_valid_until = min(expiries, default=now + MAX_AGE_S)
        return self._table.with_added("queue_depth", queue_extra) if queue_extra else self._table

    def node(self, name: str) -> NodeView | None:
        member = self._members.get(name)
        if member is None:
            return None
        beacon, problem = self._beacon(member, self._clock())
        return NodeView(member.name, member.status, member.addr, beacon, problem)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self._members.values():
            counts[m.status] = counts.get(m.status, 0) + 1
        return counts
