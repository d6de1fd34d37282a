"""Token buckets by key: a bucket of `burst` tokens per key, refilled at `rate` a second.

Used for users' spawns (hypercore.api.ratelimit, per user name) and for answers to
probes (hypercore.beacon.echo, per source address). A key whose bucket is full
again is dropped once there are many, so memory is bounded by the active keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["TokenBuckets"]

_PRUNE_ABOVE: Final = 10_000


class TokenBuckets:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def _level(self, key: str, now: float) -> float:
        tokens, when = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - when) * self.rate)

    def take(self, key: str) -> float:
        """0.0 when `key` has a token now (and takes it), else the seconds until it has one."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > _PRUNE_ABOVE:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now) >= self.burst]:
            del self._buckets[key]
