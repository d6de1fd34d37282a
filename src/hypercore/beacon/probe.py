"""Network measurement: RTT probes to a bounded random sample of peers.

Each round probes at most `sample_size` peers, so a node's probing cost does
not grow with the cluster. Over a sliding window of the last `window` probes:
  latency_ms  = median RTT of the probes answered in time
  jitter_ms   = mean |RTT_i - RTT_(i-1)| over consecutive probes answered in time
                (RFC 3550's interarrival difference, without its 1/16 smoothing)
  packet_loss = percent of probes in the window not answered in time
A probe is a request over TCP, so a lost packet shows up as an answer that
came late: TCP resends after at least 200 ms (Linux's minimum RTO). An
answer more than LATE_MS after the window's median RTT is therefore counted
as a loss, not as jitter: one retransmission would otherwise add 2 × its
delay / (window - 1) to the jitter of a link with a 1 % loss, and push a
steady 120 ms link over a 20 ms jitter rule for a whole window.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


LATE_MS = 150.0  # an answer this much slower than the median was resent by TCP: a lost packet (see above)


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


class PeerLinks:
    """This node's own probes, per peer: what it measured of each link (the peer does not control it).

    Targets are chosen so that every peer gets measured: peers never probed
    first, then the ones probed longest ago; so a node that just joined is
    measured in the next round, and each peer of N every N/k rounds.
    """

    def __init__(self, window: int = 20) -> None:
        self._size = window
        self._windows: dict[str, ProbeWindow] = {}
        self._last: dict[str, float] = {}
        self.version = 0

    def choose(self, peers: Sequence[str], k: int) -> list[str]:
        return sorted(peers, key=lambda p: (p in self._last, self._last.get(p, 0.0), p))[:k]

    def record(self, peer: str, rtt_ms: float | None) -> None:
        self._windows.setdefault(peer, ProbeWindow(self._size)).record(rtt_ms)
        self._last[peer] = time.monotonic()
        self.version += 1

    def peers(self) -> list[str]:
        """The peers this node has probe outcomes of."""
        return list(self._windows)

    def stats(self, peer: str) -> LinkStats | None:
        window = self._windows.get(peer)
        return window.stats() if window is not None else None

    def forget_except(self, peers: set[str]) -> None:
        for peer in [p for p in self._windows if p not in peers]:
            self._windows.pop(peer, None)
            self._last.pop(peer, None)
