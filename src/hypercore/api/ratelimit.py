"""How fast one user may spawn, or ask every node: a token bucket per user name, on the node that receives it.

Each user (the name a token certifies; a management token is a user too)
has a bucket of ``burst`` spawns that refills at ``rate`` per second. A spawn
that finds the bucket empty is answered 429 with ``Retry-After`` (whole
seconds until a spawn is allowed again) before anything is placed, so a
client in a loop costs the cluster one cheap refusal per request. Dry runs
count: they run the policy engine over the whole view.

Requests that ask every node (a list of everyone's workloads, the cluster's
decisions, a workload no holder knows of: O(N) node-to-node requests each,
docs/scale.md) have a bucket of their own (FanOutLimiter), so that one user
cannot turn a node into an amplifier of requests against the whole cluster.

The limit is per receiving node: a user spreading spawns over N nodes gets
N times the rate. Buckets of users idle long enough to be full again are
dropped once there are many, so memory is bounded by the active users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from hypercore.api.errors import ApiError
from hypercore.ratelimit import TokenBuckets

__all__ = ["FANOUT_BURST", "FANOUT_RATE", "FanOutLimiter", "SpawnLimiter"]

FANOUT_RATE: Final = 2.0  # requests that ask every node, per second and user (a console polling every 2 s: 0.5)
FANOUT_BURST: Final = 30


class _UserLimiter(TokenBuckets):
    doing: str  # what the user is doing too fast, for the refusal's message

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a limit needs rate > 0 and burst >= 1")
        super().__init__(rate, burst, clock)

    def check(self, user: str) -> None:
        """Counts one request of `user`; ApiError 429 (with `retry_after`, whole seconds) when over the limit."""
        wait = self.take(user)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(429, "rate_limited", f"user {user!r} is {self.doing} faster than this node allows "
                           f"({self.rate:g} per second, bursts of {self.burst:g}); retry in {retry_after} s",
                           retry_after=retry_after)


class SpawnLimiter(_UserLimiter):
    """Spawns (dry runs too: they run the policy engine over the whole view)."""

    doing = "spawning"


class FanOutLimiter(_UserLimiter):
    """Requests that ask every node."""

    doing = "asking every node"
