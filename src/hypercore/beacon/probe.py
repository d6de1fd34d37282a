"""Network measurement: RTT probes to a bounded random sample of peers.

Each round probes at most `sample_size` peers, so a node's probing cost does
not grow with the cluster. Over a sliding window of the last `window` probes:
  latency_ms  = median RTT of the probes that answered
  jitter_ms   = mean |RTT_i - RTT_(i-1)| over consecutive answered probes
                (RFC 3550's interarrival difference, without its 1/16 smoothing)
  packet_loss = percent of probes in the window that got no answer in time
"""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


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
        loss = 100.0 * (len(samples) - len(answered)) / len(samples)
        if not answered:
            return LinkStats(None, None, loss, len(samples))
        latency = statistics.median(answered)
        diffs = [abs(b - a) for a, b in zip(answered, answered[1:])]
        jitter = statistics.fmean(diffs) if diffs else 0.0
        return LinkStats(latency, jitter, loss, len(samples))


def choose_targets(peers: Sequence[str], sample_size: int, rng: random.Random | None = None) -> list[str]:
    """A random sample of at most `sample_size` peers."""
    rng = rng or random
    if len(peers) <= sample_size:
        return list(peers)
    return rng.sample(list(peers), sample_size)


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0
