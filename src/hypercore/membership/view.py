"""This node's view of the cluster: Serf members plus their verified beacon data.

Members come from Serf; beacon metrics come from each member's tags and are
trusted only after the signature, range and freshness checks of
beacon.tags.decode. Anything else is "no beacon data" for that node: its
metrics are unknown to the engine, the cause is counted, and logged once per
node and cause.

Admission: a member is a node of this cluster only when its beacon verifies
AND the cluster CA's admission in it certifies the beacon's key for the
member's name (the `admit` check the agent wires in from
hypercore.identity). A member that is not admitted is listed with its
problem (`not admitted: …`) and is nothing else: not in the engine's table,
not a peer that any node-to-node call may reach (`peer()`, `peers()`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from hypercore.beacon.tags import Beacon, BeaconInvalid, decode, max_age
from hypercore.loops import Notifier
from hypercore.membership.rpc import Member
from hypercore.policy.nodes import METRICS, NodeTable
from hypercore.policy.registry import RESOURCES

log = logging.getLogger("hypercore.view")


# Why a member is not admitted, or None when it is: (member name, its verified beacon, now).
AdmissionCheck = Callable[[str, Beacon, float], "str | None"]

REVIEW_S = 30.0  # a member's view is re-checked at least this often (a stale beacon is reported again)
_FAST_TAGS = frozenset({"m", "sig"})  # what a beacon refresh changes: measurements, timestamp, signature


def _next_review(now: float) -> float:
    """The next multiple of REVIEW_S: every member's review on one grid, so one pass re-checks them all
    (counted from each one's last check, 100 members' reviews rebuilt the sorted list 3.3 times a second)."""
    return (math.floor(now / REVIEW_S) + 1) * REVIEW_S


@dataclass(frozen=True)
class Peer:
    """Where an admitted, alive member serves its API; `name` is what its certificate must say."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class NodeView:
    name: str
    status: str
    addr: str
    beacon: Beacon | None
    problem: str | None  # why there is no beacon data, or why the member is not admitted
    admitted: bool = False

    @property
    def api_address(self) -> tuple[str, int] | None:
        if self.beacon is None:
            return None
        host, _, port = self.beacon.api.rpartition(":")
        return (host or self.addr).strip("[]"), int(port)

    @property
    def api_url(self) -> str | None:
        """For display only: calls go through hypercore.transport, which verifies the member's name."""
        address = self.api_address
        if address is None:
            return None
        host, port = address
        return f"{'[' + host + ']' if ':' in host else host}:{port}"

    @property
    def peer(self) -> Peer | None:
        """Set only for an alive, admitted member with an API: the one thing a node may call."""
        address = self.api_address
        if not self.admitted or self.status != "alive" or address is None:
            return None
        return Peer(self.name, *address)

    def record(self) -> dict[str, Any]:
        """The node as the policy engine takes it (and `cluster metrics --json` prints it)."""
        b = self.beacon
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        for key in METRICS:
            out[key] = getattr(b, key) if b else None
        out["capabilities"] = list(b.capabilities) if b else None
        out["region"] = b.region if b else None
        for key in RESOURCES:
            out[key] = getattr(b, key) if b else None
        out["beacon_id"] = b.beacon_id if b else None
        out["api"] = self.api_url
        out["admitted"] = self.admitted
        return out


class ClusterView:
    """Members and beacons, refreshed from Serf by the agent."""

    def __init__(
        self,
        invalid_counter: Counter | None = None,
        clock: Callable[[], float] = time.time,
        admit: AdmissionCheck | None = None,
    ) -> None:
        self._members: dict[str, Member] = {}
        self._verified: dict[str, tuple[str, Beacon | BeaconInvalid]] = {}  # name → (signature, its check)
        # None admits every verified beacon: only for clusters run with --insecure.
        self._admit = admit
        self._logged: set[tuple[str, str]] = set()
        self._invalid = invalid_counter
        self._clock = clock
        # Told of an admitted node whose own signed beacon went stale (reputation evidence: it stopped
        # refreshing, or froze). Only then: a beacon that does not verify cannot be pinned on anyone.
        self.on_stale: Callable[[str], None] | None = None
        # The engine's snapshot, rebuilt only when members or beacons change or
        # a beacon in it goes stale, not on every decision.
        self._table: NodeTable | None = None
        self._table_valid_until = 0.0
        # Each member's view, kept until its member changes or its beacon or admission expires (a beacon
        # refresh re-checks one member, not all of them), and the name-sorted list of them.
        self._views: dict[str, tuple[NodeView, float]] = {}
        self._sorted: list[NodeView] | None = None
        self._sorted_valid_until = 0.0
        self._peer_names: list[str] = []  # of the sorted views: peers() is asked several times per spawn
        self._size: int | None = None  # admitted members (see size)
        self.changed = Notifier()  # any change: a member, its status, its tags
        # Only who is there and reachable: joins, leaves, statuses, addresses, slow tags (not beacon refreshes).
        self.membership_changed = Notifier()

    def update(self, members: Iterable[Member]) -> None:
        """Replace the member list (a full read from Serf)."""
        new = {m.name: m for m in members}
        self._apply([m for n, m in new.items() if not self._same(n, m)], self._members.keys() - new.keys())

    def upsert(self, members: Iterable[Member]) -> None:
        """Apply members from a Serf event (join, leave, failed, update): the rest stay as they are."""
        self._apply([m for m in members if not self._same(m.name, m)], ())

    def _same(self, name: str, member: Member) -> bool:
        known = self._members.get(name)
        return known is member or known == member  # the Serf client gives back the same object when unchanged

    def remove(self, names: Iterable[str]) -> None:
        """Forget members Serf reaped."""
        self._apply([], {n for n in names if n in self._members})

    def _apply(self, changed: list[Member], removed: Iterable[str]) -> None:
        """Work in proportion to what changed (a Serf event carries up to every member; most are as they were)."""
        removed = list(removed)
        if not changed and not removed:
            return
        membership = bool(removed) or any(_membership(self._members.get(m.name)) != _membership(m) for m in changed)
        for name in removed:
            del self._members[name]
            self._views.pop(name, None)
            self._verified.pop(name, None)
        for member in changed:
            self._members[member.name] = member
            self._views.pop(member.name, None)
        self._size = None
        self._table = None
        self._sorted = None
        self.changed.notify()
        if membership:
            self.membership_changed.notify()

    def _verify(self, member: Member) -> Beacon | BeaconInvalid:
        """The check of the beacon it publishes, age aside (`_beacon` checks the age at every read)."""
        sig = member.tags.get("sig", "")
        entry = self._verified.get(member.name)
        if entry is None or entry[0] != sig:
            try:
                result: Beacon | BeaconInvalid = decode(member.tags, member.name, self._clock(), math.inf)
            except BeaconInvalid as exc:
                result = exc
            self._verified[member.name] = entry = (sig, result)
        return entry[1]

    def _beacon(self, member: Member, now: float) -> tuple[Beacon | None, str | None]:
        cached = self._verify(member)
        if isinstance(cached, Beacon):
            # The signature stays valid; freshness must be checked at every read.
            age, limit = now - cached.timestamp, self.max_age()
            if age > limit:
                if self.on_stale is not None and (self._admit is None or self._admit(member.name, cached, now) is None):
                    self.on_stale(member.name)
                return None, self._note(member.name, BeaconInvalid("stale", f"beacon is {age:.0f} s old (max {limit:.0f} s)"))
            return cached, None
        return None, self._note(member.name, cached)

    def _note(self, node: str, exc: BeaconInvalid) -> str:
        if (node, exc.cause) not in self._logged:
            self._logged.add((node, exc.cause))
            if self._invalid is not None:
                self._invalid.labels(cause=exc.cause).inc()
            log.warning("no beacon data for node", extra={"node": node, "cause": exc.cause, "detail": str(exc)})
        return f"{exc.cause}: {exc}"

    def _view(self, member: Member, now: float) -> NodeView:
        beacon, problem = self._beacon(member, now)
        if beacon is None:
            return NodeView(member.name, member.status, member.addr, None, f"not admitted: {problem}")
        if self._admit is not None and (why := self._admit(member.name, beacon, now)) is not None:
            self._note(member.name, BeaconInvalid("not_admitted", why))
            return NodeView(member.name, member.status, member.addr, None, f"not admitted: {why}")
        return NodeView(member.name, member.status, member.addr, beacon, None, admitted=True)

    def nodes(self) -> list[NodeView]:
        now = self._clock()
        if self._sorted is None or now >= self._sorted_valid_until:
            views = [self._current(name, member, now) for name, member in self._members.items()]
            self._sorted = sorted(views, key=lambda n: n.name)
            self._peer_names = [n.name for n in self._sorted if n.peer is not None]
            self._sorted_valid_until = min((self._views[n.name][1] for n in views), default=_next_review(now))
        return list(self._sorted)

    def _current(self, name: str, member: Member, now: float) -> NodeView:
        """The member's view, re-checked when its beacon or admission expired or REVIEW_S passed."""
        cached = self._views.get(name)
        if cached is not None and now < cached[1]:
            return cached[0]
        view = self._view(member, now)
        until = _next_review(now)
        if view.beacon is not None:
            until = min(until, view.beacon.timestamp + self.max_age())
            if view.beacon.admission is not None:
                until = min(until, view.beacon.admission.not_after)
        self._views[name] = (view, until)
        return view

    def peer(self, name: str) -> Peer | None:
        """The member `name` if a node-to-node call may reach it (alive, admitted, with an API)."""
        view = self.node(name)
        return view.peer if view is not None else None

    def tagged(self, key: str, value: str) -> set[str]:
        """Names of the members whose Serf tag `key` is `value` (e.g. failover's flag)."""
        return {m.name for m in self._members.values() if m.tags.get(key) == value}

    def peers(self, *, exclude: str | None = None) -> list[str]:
        """Names of every member a node-to-node call may reach, sorted (worked out with the sorted views)."""
        self.nodes()  # re-checks what expired
        if exclude is None:
            return list(self._peer_names)  # a copy in C: a spawn asks for it about seven times
        return [n for n in self._peer_names if n != exclude]

    def table(self) -> NodeTable:
        """The admitted nodes as a policy-engine snapshot (cached; see __init__).

        The scheduler derives from it what the beacons do not say (links from the
        origin, reputation, placements not yet reported): hypercore.placement.scheduler.
        """
        now = self._clock()
        if self._table is None or now >= self._table_valid_until:
            nodes = [n for n in self.nodes() if n.admitted]
            self._table = NodeTable.from_records([n.record() for n in nodes])
            expiries = [n.beacon.timestamp + self.max_age() for n in nodes if n.beacon is not None]
            expiries += [n.beacon.admission.not_after for n in nodes if n.beacon and n.beacon.admission]
            self._table_valid_until = min(expiries, default=now + self.max_age())
        return self._table

    def node(self, name: str) -> NodeView | None:
        member = self._members.get(name)
        return None if member is None else self._current(name, member, self._clock())

    def size(self) -> int:
        """Members whose beacon verifies and is admitted, whatever its age or their status: what the beacon
        refresh period is reckoned on. Not every Serf member: anyone with the gossip key can add members,
        and a flood of them would have stretched every node's refresh period and staleness limit."""
        if self._size is None:
            now = self._clock()
            self._size = sum(1 for m in self._members.values() if isinstance(b := self._verify(m), Beacon)
                             and (self._admit is None or self._admit(m.name, b, now) is None))
        return self._size

    def max_age(self) -> float:
        """How old a beacon may be in a cluster of this size (hypercore.beacon.tags.max_age)."""
        return max_age(self.size())

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self._members.values():
            counts[m.status] = counts.get(m.status, 0) + 1
        return counts


def _membership(member: Member | None) -> tuple[Any, ...] | None:
    """What of a member tells who is there and how to reach it (a beacon refresh changes none of it)."""
    if member is None:
        return None
    return member.status, member.addr, tuple(sorted((k, v) for k, v in member.tags.items() if k not in _FAST_TAGS))
