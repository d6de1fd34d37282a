"""Network coordinates: Serf's Vivaldi estimates of the round-trip time between any two members.

Serf keeps a coordinate per member from its own gossip probes; the RTT
between two members is estimated from their coordinates alone, so a node can
tell how far any candidate is from any origin without measuring that pair
(Consul's `?near=` sorting works the same way). The agent refreshes the book
from Serf's RPC (`get-coordinate`) every few seconds.
"""

from __future__ import annotations

import math

from hypercore.changes import ChangeLog
from hypercore.membership.rpc_types import Coordinate

MAX_DIMS = 64  # Serf's have 8
MAX_SECONDS = 100.0  # a component, height or adjustment beyond this is no RTT on Earth


def plausible(c: Coordinate) -> bool:
    """Whether a member's coordinate (its own report, relayed by Serf) can be used: finite, bounded, not too
    long. A component of 1e200 overflowed the distance (OverflowError in rtt_ms: `cluster metrics` failed)."""
    values = [*c.vec, c.height, c.adjustment, c.error]
    return 0 < len(c.vec) <= MAX_DIMS and all(math.isfinite(v) and abs(v) <= MAX_SECONDS for v in values)


def rtt_ms(a: Coordinate, b: Coordinate) -> float:
    """Estimated round trip between two coordinates, in ms (Serf's coordinate.DistanceTo)."""
    squares = 0.0
    for x, y in zip(a.vec, b.vec):  # as far as the shorter one goes
        d = x - y
        squares += d * d  # as Serf's Go does; `** 2` is C's pow(), which can round the other way
    distance = math.sqrt(squares) + a.height + b.height
    adjusted = distance + a.adjustment + b.adjustment
    return 1000.0 * (adjusted if adjusted > 0 else distance)


class CoordinateBook:
    """The latest coordinate of each member, as this node's Serf knows it."""

    def __init__(self) -> None:
        self._coords: dict[str, Coordinate] = {}
        self._read: dict[str, int] = {}  # name -> the refresh round it was last read in
        self._round = 0
        self.changes = ChangeLog()  # whose coordinate changed: readers keep arrays of them (placement.links)

    def stalest(self, names: set[str], k: int) -> list[str]:
        """The ``k`` members of ``names`` read longest ago (never read first): what the next refresh reads.

        A refresh round reads a fixed number of members, not all of them, so its cost per second does not
        grow with the cluster; a full pass takes ``len(names) / k`` rounds. Coordinates drift slowly
        (Vivaldi settles over tens of seconds), and a member that joins is read at once anyway.
        """
        self._round += 1
        return sorted(names, key=lambda n: (self._read.get(n, -1), n))[:k]

    def set(self, name: str, coordinate: Coordinate | None) -> None:
        """Keep `name`'s coordinate; None (or one that is not `plausible`) forgets it."""
        self._read[name] = self._round
        if coordinate is not None and not plausible(coordinate):
            coordinate = None
        if coordinate is None:
            if self._coords.pop(name, None) is not None:
                self.changes.changed(name)
        elif self._coords.get(name) != coordinate:
            self._coords[name] = coordinate
            self.changes.changed(name)

    @property
    def version(self) -> int:
        return self.changes.version

    def get(self, name: str) -> Coordinate | None:
        return self._coords.get(name)

    def forget_except(self, names: set[str]) -> None:
        for name in [n for n in self._coords if n not in names]:
            self.set(name, None)
        for name in [n for n in self._read if n not in names]:
            del self._read[name]

    def rtt_ms(self, a: str, b: str) -> float | None:
        ca, cb = self._coords.get(a), self._coords.get(b)
        return None if ca is None or cb is None else rtt_ms(ca, cb)

    def __contains__(self, name: str) -> bool:
        return name in self._coords
