"""Latency, jitter and loss as the origin of a request sees them — never as a candidate reports them.

For a spawn asked at origin O (the node that received it, or the node named
by `near`), a candidate X's
- latency: 0 for X = O; this node's own probe median of X when this node is
  O and has measured X; otherwise the RTT between O's and X's Serf network
  coordinates (until those arrive: this node's own probes, of O when X is
  this node, else of X — an approximation for a few seconds after a join);
- jitter and packet loss: 0 for X = O; otherwise what this node's own probes
  of X measured (an observer other than X).
Unknown stays unknown: the engine scores it neutral and an enforce rule on it
rejects the node. Each figure says where it came from (`sources`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercore.beacon.probe import PeerLinks
from hypercore.membership.coordinates import CoordinateBook

LINK_METRICS = ("latency_ms", "jitter_ms", "packet_loss")


@dataclass(frozen=True)
class Link:
    latency_ms: float | None
    jitter_ms: float | None
    packet_loss: float | None
    source: str  # "self", "probes", "coordinates", "probes+coordinates" or "unknown"


class OriginLinks:
    def __init__(self, self_name: str, probes: PeerLinks, coordinates: CoordinateBook) -> None:
        self.name = self_name
        self.probes = probes
        self.coordinates = coordinates

    @property
    def version(self) -> tuple[int, int]:
        return self.probes.version, self.coordinates.version

    def link(self, origin: str, node: str) -> Link:
        if node == origin:
            return Link(0.0, 0.0, 0.0, "self")
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
