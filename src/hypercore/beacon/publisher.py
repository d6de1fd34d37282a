"""Measure this node, sign the beacon and keep it published in Serf tags — within a gossip budget.

Every tag update is gossiped to the whole cluster, so tags carry what changes
slowly and are re-published only on news: price, capabilities, capacity
totals, free CPU and memory in coarse levels (at least half free, then below a
half, a quarter, an eighth, … : `free_level`), and a workload that came and
went between two beacons. A spawn is no news by itself: the queue depth and
the exact free figures go out with the next beacon, and until then the origin
that placed a workload counts it itself (hypercore.placement.unreported) and
the chosen node's admission checks the fit (late binding). So a spawn costs
no gossip; with queue depth as news, each one was relayed by every Serf and
decoded by every agent, and at 100 nodes on one machine that made spawns 2.5×
slower than at 3 (docs/scale.md). Link figures are published for compatibility
but are no news: readers measure links themselves (hypercore.placement.links),
so a jittery link causes no update. An update waits at least `min_interval`
after the previous one (a burst of changes becomes one update) and the
beacon is refreshed every `refresh` seconds anyway: 30 s in clusters of up to
11 nodes, longer in larger ones (every node relays every update, so the
period grows with the cluster: hypercore.beacon.tags.refresh_period); readers
call a beacon stale after three periods and 10 s (tags.max_age).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon.keys import fingerprint
from hypercore.beacon.probe import PeerLinks, ProbeWindow
from hypercore.beacon.tags import REFRESH_S, Admission, Beacon, encode, refresh_period, stale_after
from hypercore.loops import Wakeup, reactive
from hypercore.metrics import BEACON_GAUGES, AgentMetrics

log = logging.getLogger("hypercore.beacon")

PUBLISH_RETRY_S = 1.0
FULL_LEVEL = 5


def free_level(free: float | None, total: float | None) -> int | None:
    """Free capacity in coarse levels: 0 while at least half is free, then 1 below a half, 2 below a
    quarter, 3 below an eighth, 4 below a sixteenth, 5 below a thirty-second (full, for placement)."""
    if free is None or not total:
        return None
    fraction = free / total
    if fraction <= 0:
        return FULL_LEVEL
    return min(FULL_LEVEL, max(0, -math.frexp(fraction)[1]))  # [2^-k, 2^-k+1) -> k (exact: no log rounding)


Pinger = Callable[[Sequence[str], float], Awaitable[list[float | None]]]


class Prober:
    """Probes a bounded sample of peers each round and records RTTs; `peers` gives member names.

    `ping(nodes, timeout)` probes the members at once and gives each one's round trip in ms, or None
    (hypercore.beacon.echo: a UDP datagram each way, to the member's admitted API address)."""

    def __init__(
        self,
        peers: Callable[[], Sequence[str]],
        ping: Pinger,
        window: ProbeWindow | None = None,
        *,
        sample_size: int = 3,
        interval: float = 2.0,
        timeout: float = 1.0,
        links: PeerLinks | None = None,
        on_result: Callable[[str, float | None], None] | None = None,
    ) -> None:
        """`on_result(node, rtt_ms or None)` hears of every probe (reputation evidence of unreachable peers)."""
        self.on_result = on_result
        self.window = window or ProbeWindow()
        self.links = links if links is not None else PeerLinks()  # per peer, for origin-relative decisions
        self._peers = peers
        self._ping = ping
        self.sample_size = sample_size
        self.interval = interval
        self.timeout = timeout

    async def _probe(self, nodes: Sequence[str]) -> None:
        rtts = await self._ping(nodes, self.timeout)
        for node, rtt in zip(nodes, rtts):
            self.window.record(rtt)
            self.links.record(node, rtt)
            if self.on_result is not None:
                self.on_result(node, rtt)

    async def round(self) -> None:
        await self._probe(self.links.choose(self._peers(), self.sample_size))

    async def probe_now(self, nodes: Sequence[str]) -> None:
        """Measure members that just joined at once, not at the next round: until this node has a figure
        for one, an enforce policy with a latency rule cannot place on it."""
        peers = set(self._peers())
        await self._probe([node for node in nodes if node in peers])

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.interval)


class BeaconPublisher:
    def __init__(
        self,
        *,
        node: str,
        key: ec.EllipticCurvePrivateKey,
        api: str,
        price_per_gb: float,
        reputation: float,
        sample: Callable[[], dict[str, Any]],
        set_tags: Callable[[dict[str, str]], Awaitable[None]],
        metrics: AgentMetrics,
        admission: Admission | None = None,
        region: str | None = None,
        min_interval: float = 2.0,
        refresh: float = REFRESH_S,
        cluster_size: Callable[[], int] | None = None,
        ended_accepted_at: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`ended_accepted_at()`: when the latest-accepted workload that has ended was accepted (this
        node's clock): one accepted after the published beacon and ended before the next is news even if
        the load looks the same, since origins count it until a newer beacon (placement.unreported)."""
        self.node = node
        self._key = key
        self._admission = admission
        self.api = api
        self.region = region
        self.price_per_gb = price_per_gb
        self.reputation = reputation
        self._sample = sample
        self._set_tags = set_tags
        self._metrics = metrics
        self.min_interval = min_interval
        self._refresh = refresh
        self._cluster_size = cluster_size  # given: the refresh period grows with it (tags.refresh_period)
        self._ended_accepted_at = ended_accepted_at
        self._clock = clock
        self.published: Beacon | None = None
        self._published_at = 0.0
        self.beacon_id = fingerprint(key.public_key())
        self.wakeup = Wakeup()
        self._failed = False  # the last publication failed (Serf busy or down): try again soon

    @property
    def refresh(self) -> float:
        if self._cluster_size is None:
            return self._refresh
        return max(self._refresh, refresh_period(self._cluster_size()))

    def measure(self) -> Beacon:
        now = self._clock()
        values = {"price_per_gb": self.price_per_gb, "reputation": self.reputation, **self._sample()}
        return Beacon(api=self.api, timestamp=round(now, 3), beacon_id=self.beacon_id, region=self.region, **values)

    @staticmethod
    def _rounded(beacon: Beacon) -> tuple[Any, ...]:
        """What counts as news: slow facts, and free capacity in coarse levels (see the module docstring)."""
        return (beacon.price_per_gb, beacon.reputation, beacon.capabilities, beacon.api, beacon.region,
                beacon.cpu_total, beacon.mem_total_mb, free_level(beacon.cpu_free, beacon.cpu_total),
                free_level(beacon.mem_free_mb, beacon.mem_total_mb))

    def due(self, beacon: Beacon, now: float) -> bool:
        if self.published is None:
            return True
        since = now - self._published_at
        if since >= self.refresh:
            return True
        if since < self.min_interval:
            return False
        if self._ended_accepted_at is not None and self._ended_accepted_at() > self.published.timestamp:
            return True  # came and went unpublished: origins still count it
        return self._rounded(beacon) != self._rounded(self.published)

    async def publish_if_due(self) -> bool:
        beacon = self.measure()
        now = self._clock()
        if not self.due(beacon, now):
            self._update_connected(now)
            return False
        try:
            await self._set_tags(encode(beacon, self.node, self._key, self._admission))
        except Exception as exc:  # noqa: BLE001 - Serf down or refusing: report, retry in PUBLISH_RETRY_S
            log.warning("could not publish beacon", extra={"error": str(exc)})
            self._failed = True
            self._update_connected(now)
            return False
        self._failed = False
        self.published, self._published_at = beacon, now
        for name in BEACON_GAUGES:
            value = getattr(beacon, name)
            if value is not None:
                self._metrics.beacon[name].set(value)
        self._update_connected(now)
        return True

    def _update_connected(self, now: float) -> None:
        fresh = self.published is not None and now - self._published_at < stale_after(self.refresh)
        self._metrics.beacon_connected.set(1 if fresh else 0)

    async def run(self, longest: float = 5.0) -> None:
        """Publish when due: on a wake-up (`wakeup.set()`: the workload registry changed), at the refresh,
        and at least every `longest` seconds look for news that announced nothing (none is known: load
        changes only with the registry). A 1 s look was tried as a hedge against a flaky test ("3
        insufficient cpu" right after other spawns); its likely cause was elsewhere: a spawn stopped before
        its node published again counted at the origin for 10 s (hypercore.placement.unreported)."""
        await reactive(self.wakeup, self._tick, longest=longest, what="beacon publication", log=log)

    async def _tick(self) -> float:
        await self.publish_if_due()
        if self._failed:
            return PUBLISH_RETRY_S
        since = self._clock() - self._published_at
        # Inside the minimum interval, news waits for its end; after it, only the refresh is due.
        return self.min_interval - since if since < self.min_interval else self.refresh - since
