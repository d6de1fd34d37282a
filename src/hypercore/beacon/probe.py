"""Network measurement: RTT probes to a bounded sample of peers.

Each round probes at most `sample_size` peers, mostly of a bounded panel (see
PeerLinks), so a node's probing cost does not grow with the cluster. Over a
sliding window of the last `window` probes:
  latency_ms  = median RTT of the probes answered in time
  jitter_ms   = mean |RTT_i - RTT_(i-1)| over consecutive probes answered in time
                (RFC 3550's interarrival difference, without its 1/16 smoothing)
  packet_loss = percent of probes in the window not answered in time
A probe is a UDP datagram each way (hypercore.beacon.echo): a lost packet is a
lost probe. An answer more than LATE_MS after the window's median RTT is also
counted as a loss, not as jitter: held that long, a packet is as bad as lost
for a placement, and one such answer would otherwise add 2 × its delay /
(window - 1) to the link's jitter for a whole window (over TCP, where probes
ran before, every lost packet came back that way, and pushed a steady 120 ms
link with 1 % loss over a 20 ms jitter rule).
"""

from __future__ import annotations

import hashlib
import heapq
import os
import statistics
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hypercore.changes import ChangeLog


LATE_MS = 150.0  # an answer this much slower than the median counts as lost (see above)


@dataclass(frozen=True)
class LinkStats:
    latency_ms: float | None
    jitter_ms: float | None
    packet_loss: float | None
    samples: int


class ProbeWindow:
    """The last `size` probe outcomes: an RTT in ms, or None for a lost probe."""

    def __init__(self, size: int = 60) -> None:
        self._samples: deque[float | None] = deque(maxlen=size)

    def record(self, rtt_ms: float | None) -> None:
        self._samples.append(rtt_ms)

    def stats(self) -> LinkStats:
        samples = list(self._samples)
        if not samples:
            return LinkStats(None, None, None, 0)
        answered = [s for s in samples if s is not None]
        if answered:
            cutoff = statistics.median(answered) + LATE_MS
            answered = [s for s in answered if s <= cutoff]
        loss = 100.0 * (len(samples) - len(answered)) / len(samples)
        if not answered:
            return LinkStats(None, None, loss, len(samples))
        latency = statistics.median(answered)
        diffs = [abs(b - a) for a, b in zip(answered, answered[1:])]
        jitter = statistics.fmean(diffs) if diffs else 0.0
        return LinkStats(latency, jitter, loss, len(samples))


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


PANEL = 16  # peers probed in turn, each about every PANEL/k rounds (10 s): its connection stays open
EXPLORE_ROUNDS = 5  # one probe in this many rounds goes to a peer outside the panel (its first or stalest),
# and one every round while a peer outside it was never probed (its loss and jitter are unknown until then)


class PeerLinks:
    """This node's own probes, per peer: what it measured of each link (the peer does not control it).

    In a cluster of up to PANEL + 1 nodes every peer is probed in turn: never
    probed first, then the one probed longest ago. In a larger one the rounds
    keep to a panel of PANEL peers (a stable pseudo-random choice, different on
    every node, so each node is in about PANEL panels) and every EXPLORE_ROUNDS-th
    round sends one probe outside it. The panel was made when a probe was an
    HTTPS request, to keep probes on open connections (a peer probed less often
    than the keep-alive cost a TLS handshake on both sides every time); over UDP
    (hypercore.beacon.echo) it keeps the panel's windows fresh, each probed about
    every 10 s. Peers outside the panel are still measured (a member that joins
    is probed at once, hypercore.agent, and every round probes one never probed
    while there are any); their latency from here comes from Serf's coordinates
    between probes.
    """

    def __init__(self, window: int = 20) -> None:
        self._size = window
        self._windows: dict[str, ProbeWindow] = {}
        self._stats: dict[str, LinkStats] = {}  # each window's figures, worked out when it changes, not when read
        self.changes = ChangeLog()  # whose figures changed: readers keep arrays of them (placement.links)
        self._last: dict[str, float] = {}
        self._salt = os.urandom(8)
        self._rank: dict[str, bytes] = {}  # each peer's place in the panel order, hashed once
        self._round = 0

    def _stalest(self, peers: Iterable[str], k: int) -> list[str]:
        return sorted(peers, key=lambda p: (p in self._last, self._last.get(p, 0.0), p))[:k]

    def panel(self, peers: Sequence[str]) -> list[str]:
        if len(peers) <= PANEL:
            return list(peers)
        return heapq.nsmallest(PANEL, peers, key=self._rank_of)

    def _rank_of(self, peer: str) -> bytes:
        rank = self._rank.get(peer)
        if rank is None:
            rank = self._rank[peer] = hashlib.blake2b(peer.encode(), key=self._salt).digest()
        return rank

    def choose(self, peers: Sequence[str], k: int) -> list[str]:
        self._round += 1
        panel = self.panel(peers)
        chosen = self._stalest(panel, k)
        if len(panel) < len(peers) and k > 0:
            inside = set(panel)
            outside = [p for p in peers if p not in inside]
            unprobed = next((p for p in outside if p not in self._last), None)
            if unprobed is not None:
                chosen = chosen[: k - 1] + [unprobed]
            elif self._round % EXPLORE_ROUNDS == 0:
                chosen = chosen[: k - 1] + self._stalest(outside, 1)
        return chosen

    def record(self, peer: str, rtt_ms: float | None) -> None:
        window = self._windows.setdefault(peer, ProbeWindow(self._size))
        window.record(rtt_ms)
        self._stats[peer] = window.stats()
        self._last[peer] = time.monotonic()
        self.changes.changed(peer)

    @property
    def version(self) -> int:
        return self.changes.version

    def has(self, peer: str) -> bool:
        """Whether this node has probed `peer` (cheap: no statistics computed)."""
        return peer in self._windows

    def peers(self) -> list[str]:
        """The peers this node has probe outcomes of."""
        return list(self._windows)

    def stats(self, peer: str) -> LinkStats | None:
        return self._stats.get(peer)

    def nearest(self, limit: int) -> list[str]:
        """The `limit` peers with the lowest measured latency, nearest first (a peer never answered has none).

        Sent with every spawn this node forwards (placement.links.OriginLinks.export): in C over every probed
        peer, not a Python loop (at 10,000 probed peers a sort of Python tuples took ≈ 11 ms)."""
        latencies = {p: s.latency_ms for p, s in self._stats.items() if s.latency_ms is not None}
        if limit <= 0 or not latencies:
            return []
        peers = list(latencies)
        if len(peers) > limit:  # the nearest `limit` and whatever ties the farthest of them, then in order
            values = np.fromiter(latencies.values(), dtype=float, count=len(peers))
            peers = [peers[i] for i in np.flatnonzero(values <= np.partition(values, limit - 1)[limit - 1])]
        return sorted(peers, key=lambda p: (latencies[p], p))[:limit]  # equal latencies by name

    def forget_except(self, peers: set[str]) -> None:
        for peer in [p for p in self._windows if p not in peers]:
            self._windows.pop(peer, None)
            self._stats.pop(peer, None)
            self._last.pop(peer, None)
            self.changes.changed(peer)
        for peer in [p for p in self._rank if p not in peers]:
            del self._rank[peer]
