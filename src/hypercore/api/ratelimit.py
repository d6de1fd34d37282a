"""How fast one user may spawn: a token bucket per user name, on the node that receives the spawn.

Each user (the name a token certifies; a management token is a user too)
has a bucket of ``burst`` spawns that refills at ``rate`` per second. A spawn
that finds the bucket empty is answered 429 with ``Retry-After`` (whole
seconds until a spawn is allowed again) before anything is placed, so a
client in a loop costs the cluster one cheap refusal per request. Dry runs
count: they run the policy engine over the whole view.

The limit is per receiving node: a user spreading spawns over N nodes gets
N times the rate. Buckets of users idle long enough to be full again are
dropped once there are many, so memory is bounded by the active users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastapi.responses import JSONResponse

from hypercore.api.errors import error_response
from hypercore.ratelimit import TokenBuckets

__all__ = ["SpawnLimiter"]


class SpawnLimiter(TokenBuckets):
    """`take(user)`: 0.0 when `user` may spawn now (and counts the spawn), else the seconds until they may."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a spawn limit needs rate > 0 and burst >= 1")
        super().__init__(rate, burst, clock)

    def refusal(self, user: str, wait: float) -> JSONResponse:
        retry_after = max(1, math.ceil(wait))
        response = error_response(
            429, "rate_limited",
            f"user {user!r} is spawning faster than this node allows ({self.rate:g} per second, bursts of "
            f"{self.burst:g}); retry in {retry_after} s",
            retry_after=retry_after)
        response.headers["Retry-After"] = str(retry_after)
        return response
