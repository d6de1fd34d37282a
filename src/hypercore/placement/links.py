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

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hypercore.beacon.probe import PeerLinks
from hypercore.membership.coordinates import CoordinateBook

LINK_METRICS = ("latency_ms", "jitter_ms", "packet_loss")
REPORTED_LINKS = 256  # peers whose figures a forwarding origin sends: the nearest; the rest by coordinates
REPORTED_TTL_S = 60.0  # an origin's figures are used this long after they came
REPORTED_ORIGINS = 64  # origins whose figures are kept at once (the least recent dropped first)

# A link's figures as sent between nodes: [latency_ms, jitter_ms, packet_loss], each a number or null.
Figures = Sequence[float | None]


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

    @property
    def version(self) -> tuple[int, int, int]:
        return self.probes.version, self.coordinates.version, self._reported_version

    def export(self, limit: int = REPORTED_LINKS) -> dict[str, list[float | None]]:
        """This node's own probe figures of its nearest ``limit`` peers, to send with a spawn it forwards."""
        if self._export is not None and self._export[0] == (self.probes.version, limit):
            return self._export[1]
        rows = []
        for peer in self.probes.peers():
            stats = self.probes.stats(peer)
            if stats is not None and stats.latency_ms is not None:
                rows.append((stats.latency_ms, peer, [stats.latency_ms, stats.jitter_ms, stats.packet_loss]))
        out = {peer: figures for _, peer, figures in sorted(rows)[:limit]}
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

    def _reported_link(self, origin: str, node: str) -> Link | None:
        entry = self._reported.get(origin)
        if entry is None:
            return None
        if self._clock() - entry[0] > REPORTED_TTL_S:
            del self._reported[origin]
            self._reported_version += 1
            return None
        return entry[1].get(node)

    def link(self, origin: str, node: str) -> Link:
        if node == origin:
            return Link(0.0, 0.0, 0.0, "self")
        if origin != self.name and (reported := self._reported_link(origin, node)) is not None:
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

    def columns(self, origin: str, nodes: list[str]) -> dict[str, dict[str, float]]:
        """metric → node → value, for NodeTable.with_values (NaN where unknown)."""
        out: dict[str, dict[str, float]] = {m: {} for m in LINK_METRICS}
        for node in nodes:
            link = self.link(origin, node)
            for metric in LINK_METRICS:
                value = getattr(link, metric)
                out[metric][node] = float("nan") if value is None else value
        return out
