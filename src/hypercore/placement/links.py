"""Latency, jitter and loss as the origin of a request sees them — never as a candidate reports them.

For a spawn asked at origin O (the node that received it, or the node named
by `near`), a candidate X's
- latency: 0 for X = O; this node's own probe median of X when this node is
  O and has measured X; otherwise the RTT between O's and X's Serf network
  coordinates (until those arrive: this node's own probes, of O when X is
  this node, else of X — an approximation for a few seconds after a join);
- jitter and packet loss: 0 for X = O; otherwise what this node's own probes
  of X measured (an observer other than X).
When O is another node that forwarded the spawn here, O sends its own probe
figures along (its nearest REPORTED_LINKS peers, :meth:`OriginLinks.export`),
and for the candidates it measured those come first: O's own direct
measurements refine the coordinate estimate, as they would if O placed the
spawn itself. They are taken only from O's own verified certificate (a node
can report its own links, never another's) and kept REPORTED_TTL_S.
Unknown stays unknown: the engine scores it neutral and an enforce rule on it
rejects the node. Each figure says where it came from (`sources`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hypercore.beacon.probe import LinkStats, PeerLinks
from hypercore.membership.coordinates import CoordinateBook, rtt_ms
from hypercore.membership.rpc_types import Coordinate

REPORTED_LINKS = 256  # peers whose figures a forwarding origin sends: the nearest; the rest by coordinates
REPORTED_TTL_S = 60.0  # an origin's figures are used this long after they came
REPORTED_ORIGINS = 64  # origins whose figures are kept at once (the least recent dropped first)
DIMS = 8  # Serf's coordinates have 8 dimensions; one of another length is worked out on its own (rtt_ms)

# A link's figures as sent between nodes: [latency_ms, jitter_ms, packet_loss], each a number or null.
Figures = Sequence[float | None]


def _figures(stats: LinkStats | None) -> tuple[float, float, float]:
    if stats is None:
        return math.nan, math.nan, math.nan
    return tuple(math.nan if v is None else float(v)  # type: ignore[return-value]
                 for v in (stats.latency_ms, stats.jitter_ms, stats.packet_loss))


class _Aligned:
    """This node's probe figures and the members' coordinates as arrays in the order of one tuple of names,
    kept up to date from the probes' and the coordinates' change logs: a decision over N nodes then costs a
    few NumPy passes, not N look-ups and N Python computations (54–76 ms at 10,000 nodes: bench/derive.py)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        n = len(names)
        self.index = dict(zip(names, range(n)))
        self.measured = np.full((n, 3), np.nan)  # latency, jitter, loss from this node's own probes
        self.vec = np.zeros((n, DIMS))
        self.height = np.zeros(n)
        self.adjustment = np.zeros(n)
        self.located = np.zeros(n, dtype=bool)  # a coordinate of DIMS dimensions is in the arrays
        self.odd: dict[int, Coordinate] = {}  # rows whose coordinate has another number of dimensions
        self.probes_seen = -1
        self.coordinates_seen = -1
        self._fresh: list[str] = []  # rows not carried from earlier arrays, to read one by one

    def carried_from(self, old: _Aligned) -> _Aligned:
        """These names' rows taken from `old`'s where it had them, as of what `old` had seen: after a membership
        change only the newcomers are read one by one (at 10,000 nodes every row was: 26 ms)."""
        # Look-ups in C (map over the names): a Python loop over them was most of the 9.5 ms at 10,000 nodes.
        rows = np.fromiter(map(old.index.get, self.names, itertools.repeat(-1)), dtype=np.intp, count=len(self.names))
        kept = rows >= 0
        for mine, theirs in ((self.measured, old.measured), (self.vec, old.vec), (self.height, old.height),
                             (self.adjustment, old.adjustment), (self.located, old.located)):
            mine[kept] = theirs[rows[kept]]
        self.odd = {i: c for r, c in old.odd.items() if (i := self.index.get(old.names[r])) is not None}
        self._fresh = [self.names[i] for i in np.flatnonzero(~kept).tolist()]
        self.probes_seen, self.coordinates_seen = old.probes_seen, old.coordinates_seen
        return self

    def update(self, probes: PeerLinks, coordinates: CoordinateBook) -> None:
        for name in self._fresh:  # names new since the arrays this one was carried from
            i = self.index[name]
            self.measured[i] = _figures(probes.stats(name))
            self._locate(i, coordinates.get(name))
        self._fresh = []
        if probes.version != self.probes_seen:
            changed = probes.changes.since(self.probes_seen) if self.probes_seen >= 0 else None
            for peer in self.names if changed is None else changed:
                if (i := self.index.get(peer)) is not None:
                    self.measured[i] = _figures(probes.stats(peer))
            self.probes_seen = probes.version
        if coordinates.version != self.coordinates_seen:
            changed = coordinates.changes.since(self.coordinates_seen) if self.coordinates_seen >= 0 else None
            for name in self.names if changed is None else changed:
                if (i := self.index.get(name)) is not None:
                    self._locate(i, coordinates.get(name))
            self.coordinates_seen = coordinates.version

    def _locate(self, i: int, c: Coordinate | None) -> None:
        self.odd.pop(i, None)
        self.located[i] = c is not None and len(c.vec) == DIMS
        if c is None:
            return
        if len(c.vec) != DIMS:
            self.odd[i] = c
            return
        self.vec[i], self.height[i], self.adjustment[i] = c.vec, c.height, c.adjustment

    def rtt_from(self, origin: Coordinate | None, coordinates: CoordinateBook) -> tuple[np.ndarray, np.ndarray]:
        """Each node's estimated RTT from `origin`'s coordinate, Serf's DistanceTo, and where there is one
        (both have a coordinate). The same operations in the same order as rtt_ms: the same floats."""
        out = np.full(len(self.names), np.nan)
        known = np.zeros(len(self.names), dtype=bool)
        if origin is None:
            return out, known
        if len(origin.vec) == DIMS:
            diff = np.asarray(origin.vec) - self.vec
            squares = np.zeros(len(self.names))
            for i in range(DIMS):  # d * d summed left to right, as rtt_ms does
                squares = squares + diff[:, i] * diff[:, i]
            distance = np.sqrt(squares) + origin.height + self.height
            adjusted = distance + origin.adjustment + self.adjustment
            out = np.where(self.located, 1000.0 * np.where(adjusted > 0, adjusted, distance), np.nan)
            known |= self.located
            odd = self.odd
        else:  # a coordinate of another length (not Serf's): one by one, as rtt_ms does
            odd = {i: c for i, name in enumerate(self.names) if (c := coordinates.get(name)) is not None}
        for i, c in odd.items():
            out[i], known[i] = rtt_ms(origin, c), True
        return out, known


@dataclass(frozen=True)
class Link:
    latency_ms: float | None
    jitter_ms: float | None
    packet_loss: float | None
    source: str  # "self", "probes", "coordinates", "probes+coordinates" or "unknown"


class OriginLinks:
    def __init__(self, self_name: str, probes: PeerLinks, coordinates: CoordinateBook,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = self_name
        self.probes = probes
        self.coordinates = coordinates
        self._clock = clock
        self._reported: OrderedDict[str, tuple[float, dict[str, Link]]] = OrderedDict()
        self._reported_version = 0
        self._export: tuple[tuple[int, int], dict[str, list[float | None]]] | None = None
        self._aligned: _Aligned | None = None

    @property
    def version(self) -> tuple[int, int, int]:
        return self.probes.version, self.coordinates.version, self._reported_version

    def export(self, limit: int = REPORTED_LINKS) -> dict[str, list[float | None]]:
        """This node's own probe figures of its nearest ``limit`` peers, to send with a spawn it forwards."""
        if self._export is not None and self._export[0] == (self.probes.version, limit):
            return self._export[1]
        out = {}
        for peer in self.probes.nearest(limit):
            stats = self.probes.stats(peer)
            assert stats is not None
            out[peer] = [stats.latency_ms, stats.jitter_ms, stats.packet_loss]
        self._export = ((self.probes.version, limit), out)
        return out

    def remember_reported(self, origin: str, figures: Mapping[str, Figures]) -> None:
        """Keep what ``origin`` measured itself (the caller checked that ``origin`` sent it)."""
        links = {}
        for node, values in list(figures.items())[:REPORTED_LINKS]:
            lat, jit, loss = (v if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else None
                              for v in (list(values) + [None] * 3)[:3])
            if lat is not None and node != origin:
                links[node] = Link(float(lat), jit, loss, f"probes of {origin}")
        self._reported[origin] = (self._clock(), links)
        self._reported.move_to_end(origin)
        while len(self._reported) > REPORTED_ORIGINS:
            self._reported.popitem(last=False)
        self._reported_version += 1

    def _reported_links(self, origin: str) -> dict[str, Link]:
        entry = self._reported.get(origin)
        if entry is None:
            return {}
        if self._clock() - entry[0] > REPORTED_TTL_S:
            del self._reported[origin]
            self._reported_version += 1
            return {}
        return entry[1]

    def link(self, origin: str, node: str) -> Link:
        if node == origin:
            return Link(0.0, 0.0, 0.0, "self")
        if origin != self.name and (reported := self._reported_links(origin).get(node)) is not None:
            return reported
        measured = self.probes.stats(node)
        jitter = measured.jitter_ms if measured is not None else None
        loss = measured.packet_loss if measured is not None else None
        if origin == self.name and measured is not None and measured.latency_ms is not None:
            return Link(measured.latency_ms, jitter, loss, "probes")
        estimate = self.coordinates.rtt_ms(origin, node)
        if estimate is not None:
            return Link(estimate, jitter, loss, "coordinates" if measured is None else "probes+coordinates")
        # No coordinates yet (a member that just joined): a round trip is symmetric, so this node's own
        # probes of the origin tell the origin's distance to this node.
        if node == self.name and (back := self.probes.stats(origin)) is not None and back.latency_ms is not None:
            return Link(back.latency_ms, back.jitter_ms, back.packet_loss, "probes")
        # Last resort, until the coordinates arrive (seconds): this node's own distance to the candidate.
        if measured is not None and measured.latency_ms is not None:
            return Link(measured.latency_ms, jitter, loss, f"probes from {self.name}")
        return Link(None, jitter, loss, "unknown")

    def arrays(self, origin: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """metric → one value per name in `names` order (NaN where unknown): what `link` gives for each, for
        NodeTable.with_column; worked out for all names at once."""
        aligned = self._aligned
        if aligned is None:
            aligned = self._aligned = _Aligned(names)
        elif aligned.names != names:  # members came or went: carry what is known of the others
            aligned = self._aligned = _Aligned(names).carried_from(aligned)
        aligned.update(self.probes, self.coordinates)
        measured, index = aligned.measured, aligned.index
        latency, known = aligned.rtt_from(self.coordinates.get(origin), self.coordinates)
        jitter, loss = measured[:, 1].copy(), measured[:, 2].copy()
        if origin == self.name:  # this node's own probe median first
            probed = ~np.isnan(measured[:, 0])
            latency = np.where(probed, measured[:, 0], latency)
            known |= probed
        me = index.get(self.name)
        if me is not None and not known[me]:
            back = self.probes.stats(origin)  # no coordinates yet: the origin's distance to this node
            if back is not None and back.latency_ms is not None:
                latency[me], jitter[me], loss[me] = _figures(back)
                known[me] = True
        latency = np.where(known, latency, measured[:, 0])  # last resort: this node's own distance
        if origin != self.name:
            for node, link in self._reported_links(origin).items():
                if (i := index.get(node)) is not None:
                    latency[i], jitter[i], loss[i] = (math.nan if v is None else v
                                                      for v in (link.latency_ms, link.jitter_ms, link.packet_loss))
        if (o := index.get(origin)) is not None:
            latency[o] = jitter[o] = loss[o] = 0.0
        return {"latency_ms": latency, "jitter_ms": jitter, "packet_loss": loss}
