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

import bisect
import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from hypercore.beacon.tags import Beacon, BeaconInvalid, decode, max_age
from hypercore.changes import ChangeLog
from hypercore.loops import Notifier
from hypercore.membership.due import DueChecks
from hypercore.membership.engine_table import EngineTable
from hypercore.membership.rpc import Member
from hypercore.policy.nodes import METRICS, NodeTable
from hypercore.policy.registry import RESOURCES

log = logging.getLogger("hypercore.view")


# Why a member is not admitted, or None when it is: (member name, its verified beacon, now).
AdmissionCheck = Callable[[str, Beacon, float], "str | None"]

_FAST_TAGS = frozenset({"m", "sig"})  # what a beacon refresh changes: measurements, timestamp, signature


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
        # Each member's view, kept until its member changes, or until its verdict may change by itself (its
        # beacon goes stale, or fresh again, its admission ends: hypercore.membership.due).
        self._views: dict[str, NodeView] = {}
        self._due = DueChecks()
        # The views in name order, the names of the peers among them, and the engine's table of the admitted
        # ones: brought up to date for the members changed since (`_changed`) and those whose verdict came due
        # (`_due`); an entry replaced, inserted or deleted (see _catch_up).
        self._names: list[str] = []
        self._sorted: list[NodeView] = []
        self._peer_names: list[str] = []  # peers() is asked several times per spawn
        self._engine = EngineTable()
        self._changed: set[str] = set()
        self._started = False  # the first read checks every member
        self._counted: set[str] = set()  # members size() counts
        self._uncounted: set[str] = set()  # members changed since size() last counted them
        self._count_due: list[tuple[float, str]] = []  # (when, member): an admission ends, an early beacon passes
        self._max_age: tuple[int, float] = (-1, 0.0)  # (size, max_age of that size)
        self.changed = Notifier()  # any change: a member, its status, its tags
        self.statuses = ChangeLog()  # members whose Serf status changed, or who came or went (failover's watch)
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
            self.statuses.changed(name)
            self._views.pop(name, None)
            self._verified.pop(name, None)
            self._engine.put(name, None)
            self._changed.add(name)
            self._uncounted.add(name)
        for member in changed:
            known = self._members.get(member.name)
            if known is None or known.status != member.status:
                self.statuses.changed(member.name)
            self._members[member.name] = member
            self._views.pop(member.name, None)
            self._changed.add(member.name)
            self._uncounted.add(member.name)
        self.changed.notify()
        if membership:
            self.membership_changed.notify()

    def _verify(self, member: Member) -> Beacon | BeaconInvalid:
        """The check of the beacon it publishes, age aside (`_beacon` checks the age at every read)."""
        sig = member.tags.get("sig", "")
        entry = self._verified.get(member.name)
        if entry is None or entry[0] != sig or (isinstance(entry[1], BeaconInvalid) and entry[1].until is not None
                                                 and self._clock() >= entry[1].until):
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
        self._catch_up()
        return list(self._sorted)

    def _catch_up(self) -> None:
        """Bring the sorted views, the peer names and the engine's table up to date, in proportion to what
        changed: members changed since the last time (a beacon refresh: one) and members whose verdict may
        have changed by itself since (hypercore.membership.due)."""
        now = self._clock()
        limit = self.max_age()
        if not self._started:
            self._started = True
            self._changed.clear()
            self._due.clear()
            self._names = sorted(self._members)
            self._sorted = [self._current(name, self._members[name], now, limit) for name in self._names]
            self._peer_names = [n.name for n in self._sorted if n.peer is not None]
            return
        if not self._changed and not self._due.any_due(now, limit):
            return  # a read: nothing changed, nothing came due
        recheck = self._due.take_due(now, limit, self._timestamp_of)
        for name in self._changed | recheck:
            i = bisect.bisect_left(self._names, name)
            listed = i < len(self._names) and self._names[i] == name
            member = self._members.get(name)
            if member is None:
                if listed:
                    del self._names[i], self._sorted[i]
                _place(self._peer_names, name, False)
                continue
            view = self._current(name, member, now, limit, recheck=name in recheck)
            if listed:
                self._sorted[i] = view
            else:
                self._names.insert(i, name)
                self._sorted.insert(i, view)
            _place(self._peer_names, name, view.peer is not None)
        self._changed.clear()
        if self._due.too_large(len(self._members)):
            self._due.clear()
            for name, member in self._members.items():
                self._schedule(name, member, now, limit)

    def _timestamp_of(self, name: str) -> float | None:
        entry = self._verified.get(name)
        return entry[1].timestamp if entry is not None and isinstance(entry[1], Beacon) else None

    def _current(self, name: str, member: Member, now: float, limit: float, recheck: bool = False) -> NodeView:
        """The member's view (checked again with `recheck`), and when to check it again."""
        cached = self._views.get(name)
        if cached is not None and not recheck:
            return cached
        view = self._view(member, now)
        self._schedule(name, member, now, limit)
        self._uncounted.add(name)  # what size() counts may have changed with it
        if cached is not None and cached == view:
            view = cached  # checked again, found as it was: the engine's row stands
        else:
            self._engine.put(name, view.record() if view.admitted else None)
        self._views[name] = view
        return view

    def _schedule(self, name: str, member: Member, now: float, limit: float) -> None:
        beacon = self._verify(member)
        stale_and_ours = (self.on_stale is not None and isinstance(beacon, Beacon) and now - beacon.timestamp > limit
                          and (self._admit is None or self._admit(name, beacon, now) is None))
        self._due.schedule(name, beacon, now, limit, report_stale=stale_and_ours)

    def peer(self, name: str) -> Peer | None:
        """The member `name` if a node-to-node call may reach it (alive, admitted, with an API)."""
        view = self.node(name)
        return view.peer if view is not None else None

    def status(self, name: str) -> str | None:
        """Serf's status of member `name` (alive, failed, left, leaving), None if not a member."""
        member = self._members.get(name)
        return member.status if member is not None else None

    def tagged(self, key: str, value: str) -> set[str]:
        """Names of the members whose Serf tag `key` is `value` (e.g. failover's flag)."""
        return {m.name for m in self._members.values() if m.tags.get(key) == value}

    def peers(self, *, exclude: str | None = None) -> list[str]:
        """Names of every member a node-to-node call may reach, sorted (worked out with the sorted views)."""
        self._catch_up()
        if exclude is None:
            return list(self._peer_names)  # a copy in C: a spawn asks for it about seven times
        return [n for n in self._peer_names if n != exclude]

    def table(self) -> NodeTable:
        """The admitted nodes as a policy-engine snapshot (cached; see __init__).

        The scheduler derives from it what the beacons do not say (links from the
        origin, reputation, placements not yet reported): hypercore.placement.scheduler.
        """
        self._catch_up()  # which also re-checks a beacon gone stale, an admission ended
        return self._engine.table()

    def node(self, name: str) -> NodeView | None:
        self._catch_up()
        return self._views.get(name)

    def size(self) -> int:
        """Members whose beacon verifies and is admitted, whatever its age or their status: what the beacon
        refresh period is reckoned on. Not every Serf member: anyone with the gossip key can add members,
        and a flood of them would have stretched every node's refresh period and staleness limit."""
        now = self._clock()
        while self._count_due and self._count_due[0][0] <= now:
            self._uncounted.add(heapq.heappop(self._count_due)[1])
        for name in self._uncounted:
            m = self._members.get(name)
            b = self._verify(m) if m is not None else None
            if isinstance(b, Beacon) and (self._admit is None or self._admit(name, b, now) is None):
                self._counted.add(name)
                if b.admission is not None:
                    heapq.heappush(self._count_due, (float(b.admission.not_after), name))
            else:
                self._counted.discard(name)
                if isinstance(b, BeaconInvalid) and b.until is not None:
                    heapq.heappush(self._count_due, (b.until, name))
        self._uncounted.clear()
        if len(self._count_due) > 2 * len(self._members) + 64:  # entries of earlier beacons: drop them
            self._count_due = []
            self._uncounted = set(self._members)
        return len(self._counted)

    def max_age(self) -> float:
        """How old a beacon may be in a cluster of this size (hypercore.beacon.tags.max_age)."""
        size = self.size()
        if self._max_age[0] != size:
            self._max_age = (size, max_age(size))
        return self._max_age[1]

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self._members.values():
            counts[m.status] = counts.get(m.status, 0) + 1
        return counts


def _place(names: list[str], name: str, present: bool) -> None:
    """Insert `name` into the sorted list `names`, or delete it from there, as `present` says."""
    i = bisect.bisect_left(names, name)
    listed = i < len(names) and names[i] == name
    if present and not listed:
        names.insert(i, name)
    elif listed and not present:
        del names[i]


def _membership(member: Member | None) -> tuple[Any, ...] | None:
    """What of a member tells who is there and how to reach it (a beacon refresh changes none of it)."""
    if member is None:
        return None
    return member.status, member.addr, tuple(sorted((k, v) for k, v in member.tags.items() if k not in _FAST_TAGS))
