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
from hypercore.loops import Notifier
from hypercore.membership.engine_table import EngineTable
from hypercore.membership.rpc import Member
from hypercore.policy.nodes import METRICS, NodeTable
from hypercore.policy.registry import RESOURCES

log = logging.getLogger("hypercore.view")


# Why a member is not admitted, or None when it is: (member name, its verified beacon, now).
AdmissionCheck = Callable[[str, Beacon, float], "str | None"]

_FAST_TAGS = frozenset({"m", "sig"})  # what a beacon refresh changes: measurements, timestamp, signature
# How old a beacon may be grows with the cluster (tags.max_age); a member's view is checked against the limit
# of its moment and re-checked when its beacon or admission expires. Once the limit moved by more than this
# fraction since every view was checked, all are checked again: a pass over N members per that much growth
# or shrinkage of the cluster (80 ms at 10,000), not per join or per second.
MAX_AGE_DRIFT = 0.1


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
        # Each member's view, kept until its member changes or its beacon or admission expires (a beacon
        # refresh re-checks one member, not all of them).
        self._views: dict[str, tuple[NodeView, float]] = {}
        # The views in name order, the names of the peers among them, and the engine's table of the admitted
        # ones: brought up to date for the members changed since (`_changed`; an entry replaced, inserted or
        # deleted), and checked again in full when a view in them expires (see _catch_up).
        self._names: list[str] = []
        self._sorted: list[NodeView] = []
        self._peer_names: list[str] = []  # peers() is asked several times per spawn
        self._engine = EngineTable()
        self._changed: set[str] = set()
        self._expiries: list[tuple[float, str]] = []  # a heap of (when a view expires, its member)
        self._checked_max_age: float | None = None  # the age limit when every view was last checked
        self._counted: set[str] = set()  # members size() counts
        self._uncounted: set[str] = set()  # members changed since size() last counted them
        self._count_until = 0.0  # when an admission among the counted ends: size() counts all again
        self._max_age: tuple[int, float] = (-1, 0.0)  # (size, max_age of that size)
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
            self._engine.put(name, None)
            self._changed.add(name)
            self._uncounted.add(name)
        for member in changed:
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
        changed: members changed since the last time (a beacon refresh: one) and views that expired (a
        beacon went stale, an admission ended); every view when the age limit drifted (MAX_AGE_DRIFT)."""
        now = self._clock()
        if not self._changed and now < self._count_until and self._checked_max_age is not None and not (
                self._expiries and self._expiries[0][0] <= now):
            return  # nothing changed, nothing expired, and the age limit moves only with a change: a read
        max_age = self.max_age()
        if self._checked_max_age is None or abs(max_age - self._checked_max_age) > MAX_AGE_DRIFT * self._checked_max_age:
            self._checked_max_age = max_age
            self._changed.clear()
            self._expiries = []
            self._names = sorted(self._members)
            self._sorted = [self._current(name, self._members[name], now, recheck=True) for name in self._names]
            self._peer_names = [n.name for n in self._sorted if n.peer is not None]
            return
        while self._expiries and self._expiries[0][0] <= now:
            until, name = heapq.heappop(self._expiries)
            if (entry := self._views.get(name)) is not None and entry[1] == until:
                self._changed.add(name)
        for name in self._changed:
            i = bisect.bisect_left(self._names, name)
            listed = i < len(self._names) and self._names[i] == name
            member = self._members.get(name)
            if member is None:
                if listed:
                    del self._names[i], self._sorted[i]
                _place(self._peer_names, name, False)
                continue
            view = self._current(name, member, now)
            if listed:
                self._sorted[i] = view
            else:
                self._names.insert(i, name)
                self._sorted.insert(i, view)
            _place(self._peer_names, name, view.peer is not None)
        self._changed.clear()
        if len(self._expiries) > 4 * len(self._members) + 64:  # entries of views replaced since: drop them
            self._expiries = [(until, name) for name, (_, until) in self._views.items() if until < math.inf]
            heapq.heapify(self._expiries)

    def _current(self, name: str, member: Member, now: float, recheck: bool = False) -> NodeView:
        """The member's view, checked again when its beacon or admission expired (or `recheck`)."""
        cached = self._views.get(name)
        if cached is not None and now < cached[1] and not recheck:
            return cached[0]
        view = self._view(member, now)
        # A view changes by itself only when a fresh beacon goes stale, an admission ends (admitted or not,
        # what it says changes then) or an early beacon's time comes; a stale or invalid beacon stays so until
        # the member publishes another (or the age limit drifts).
        until, beacon = math.inf, self._verify(member)
        if isinstance(beacon, BeaconInvalid) and beacon.until is not None:
            until = beacon.until  # a timestamp in the future: checked again when the clock comes near it
        elif isinstance(beacon, Beacon):
            if now <= (stale_at := beacon.timestamp + self.max_age()):
                until = stale_at
            if beacon.admission is not None and now < beacon.admission.not_after:
                until = min(until, beacon.admission.not_after)
        if until < math.inf:
            heapq.heappush(self._expiries, (until, name))
        self._uncounted.add(name)  # what size() counts may have changed with it (a beacon no longer early)
        if cached is not None and cached[0] == view:
            view = cached[0]  # checked again, found as it was: the engine's row stands
        else:
            self._engine.put(name, view.record() if view.admitted else None)
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
        member = self._members.get(name)
        if member is None:
            return None
        before = self._views.get(name)
        view = self._current(name, member, self._clock())
        if before is None or before[0] is not view:
            self._changed.add(name)  # checked here first: the sorted views take it at their next catch-up
        return view

    def size(self) -> int:
        """Members whose beacon verifies and is admitted, whatever its age or their status: what the beacon
        refresh period is reckoned on. Not every Serf member: anyone with the gossip key can add members,
        and a flood of them would have stretched every node's refresh period and staleness limit."""
        now = self._clock()
        if now >= self._count_until:
            self._counted.clear()
            self._uncounted, self._count_until = set(self._members), math.inf
        for name in self._uncounted:
            m = self._members.get(name)
            if m is not None and isinstance(b := self._verify(m), Beacon) and (
                    self._admit is None or self._admit(name, b, now) is None):
                self._counted.add(name)
                if b.admission is not None:
                    self._count_until = min(self._count_until, b.admission.not_after)
            else:
                self._counted.discard(name)
        self._uncounted.clear()
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
