"""The beacon stays within a gossip budget: only news is published, and at most every refresh in steady state."""

from __future__ import annotations

from typing import Any

import pytest

from hypercore.beacon.keys import generate
from hypercore.beacon.publisher import BeaconPublisher
from hypercore.metrics import AgentMetrics


def publisher(sample: Any, **kw: Any) -> tuple[BeaconPublisher, list[dict[str, str]]]:
    """A publisher of node "n" whose publications are collected in the returned list instead of Serf's tags."""
    published: list[dict[str, str]] = []

    async def set_tags(tags: dict[str, str]) -> None:
        published.append(tags)

    return BeaconPublisher(node="n", key=generate(), api=":8001", price_per_gb=0.01, reputation=1.0, sample=sample,
                           set_tags=set_tags, metrics=AgentMetrics(), **kw), published


async def test_jittery_links_and_small_load_changes_publish_nothing_new() -> None:
    now = [1_000.0]
    sample: dict[str, Any] = {"latency_ms": 1.0, "jitter_ms": 0.1, "packet_loss": 0.0, "queue_depth": 4.0,
                              "capabilities": ("exec",), "cpu_total": 8.0, "cpu_free": 6.0, "mem_total_mb": 1000.0,
                              "mem_free_mb": 900.0}
    pub, published = publisher(lambda: dict(sample), clock=lambda: now[0])
    assert await pub.publish_if_due() and len(published) == 1
    # 29 s of wobbling links, the queue doubling twice and a little less free CPU: no update.
    for i in range(29):
        now[0] += 1.0
        sample.update(latency_ms=1.0 + i % 3, jitter_ms=0.1 * i, packet_loss=float(i % 2))
        if i == 10:
            sample.update(queue_depth=8.0, cpu_free=5.0)
        if i == 20:
            sample.update(queue_depth=16.0, cpu_free=4.1)
        await pub.publish_if_due()
    assert len(published) == 1
    # Real news (less than half of the CPU free) goes out at once, not waiting for the refresh.
    now[0] += 0.5
    sample["cpu_free"] = 3.9
    await pub.publish_if_due()
    assert len(published) == 2
    # More news right after waits for min_interval (2 s): a burst becomes one update.
    now[0] += 0.5
    sample["cpu_free"] = 1.9
    await pub.publish_if_due()
    assert len(published) == 2
    now[0] += 2.0
    await pub.publish_if_due()
    assert len(published) == 3
    # Steady state: one refresh per 30 s.
    for _ in range(60):
        now[0] += 1.0
        await pub.publish_if_due()
    assert len(published) == 5


async def test_a_spawn_is_no_news_its_load_goes_out_with_the_next_beacon() -> None:
    # Issue 10 at 100 nodes: the queue depth going 0 -> 1 was news, so every spawn's beacon was relayed by
    # all 100 Serf agents and decoded by all 100 agents (about 0.2 s of CPU per spawn on 2 cores), and
    # back-to-back spawns took 2.45x as long as on 3 nodes. The origin counts what it placed itself and the
    # chosen node's admission checks the fit (placement.unreported, late binding).
    from hypercore.beacon.tags import decode

    now = [1_000.0]
    sample: dict[str, Any] = {"queue_depth": 0.0, "cpu_total": 2.0, "cpu_free": 2.0, "mem_total_mb": 1000.0,
                              "mem_free_mb": 1000.0}
    pub, published = publisher(lambda: dict(sample), clock=lambda: now[0])
    assert await pub.publish_if_due()
    for queue in range(1, 20):  # 19 small workloads (cpu 0.01, 1 MB, as bench/scale.py spawns), 1 s apart
        now[0] += 1.0
        sample.update(queue_depth=float(queue), cpu_free=2.0 - 0.01 * queue, mem_free_mb=1000.0 - queue)
        assert not await pub.publish_if_due()
    now[0] += 11.0  # the refresh carries them
    assert await pub.publish_if_due()
    assert decode(published[-1], "n", now[0]).queue_depth == 19.0


def test_free_capacity_levels() -> None:
    from hypercore.beacon.publisher import free_level

    total = 32.0
    assert [free_level(f, total) for f in (32, 16, 15.9, 8, 7.9, 4, 3.9, 2, 1.9, 1, 0.9, 0, -1)] == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
    assert free_level(None, total) is None and free_level(1.0, None) is None and free_level(1.0, 0.0) is None


async def test_the_publisher_sleeps_until_told_of_a_change_and_news_waits_for_the_minimum_interval() -> None:
    # Issue 10's idle floor: it measured the node every second to find out that nothing changed. Now it
    # measures when the registry tells it (the agent subscribes the wakeup to the workload store), at the
    # refresh, and at the latest every `longest` seconds.
    import asyncio

    sample: dict[str, Any] = {"queue_depth": 0.0, "capabilities": ("exec",), "cpu_total": 8.0, "cpu_free": 8.0}
    measured = [0]

    def measure() -> dict[str, Any]:
        measured[0] += 1
        return dict(sample)

    pub, published = publisher(measure, min_interval=1.0)
    loop = asyncio.ensure_future(pub.run(longest=60))
    try:
        await asyncio.sleep(1.3)
        assert len(published) == 1 and measured[0] <= 2  # the first publication, then the minimum interval's end
        idle = measured[0]
        await asyncio.sleep(1.0)
        assert measured[0] == idle  # nothing changed: nothing measured
        sample["cpu_free"] = 3.0
        pub.wakeup.set()
        await asyncio.sleep(0.2)
        assert len(published) == 2  # news, past the minimum interval: at once
        sample["cpu_free"] = 0.5
        pub.wakeup.set()
        await asyncio.sleep(0.3)
        assert len(published) == 2  # more news inside the minimum interval waits for its end ...
        await asyncio.sleep(1.0)
        assert len(published) == 3  # ... and then goes out without another wake-up
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_the_refresh_period_grows_with_the_cluster_so_that_gossip_per_node_does_not() -> None:
    # Issue 10 at 100 nodes: every node relays every update 12 times (memberlist), so a fixed 30 s refresh
    # asked 40 sends a second of each node — most of what it can send — and readers' Serf RPCs timed out.
    from hypercore.beacon.tags import REFRESH_RELAYS_PER_NODE, max_age, refresh_period, retransmits

    assert [retransmits(n) for n in (3, 9, 10, 98, 99, 100, 999, 1000)] == [4, 4, 8, 8, 8, 12, 12, 16]
    assert refresh_period(3) == refresh_period(11) == 30.0 and max_age(10) == 100.0  # small clusters: as before
    assert refresh_period(100) == 400.0 and max_age(100) == 1210.0
    for n in (12, 100, 1_000, 10_000):
        assert n / refresh_period(n) * retransmits(n) == pytest.approx(REFRESH_RELAYS_PER_NODE)  # constant per node
    size = [3]
    now = [1_000.0]
    pub, published = publisher(lambda: {"queue_depth": 0.0}, cluster_size=lambda: size[0], clock=lambda: now[0])
    await pub.publish_if_due()
    now[0] += 31
    await pub.publish_if_due()
    assert len(published) == 2  # 3 nodes: every 30 s
    size[0] = 100
    now[0] += 31
    await pub.publish_if_due()
    assert len(published) == 2  # 100 nodes: not before 400 s
    now[0] += 370
    await pub.publish_if_due()
    assert len(published) == 3


async def test_a_workload_that_came_and_went_between_two_beacons_is_news() -> None:
    # A spawn and its stop inside one minimum interval leave the load as it was, so no beacon went out, and
    # the origin that placed it counted it against this node for 10 s (placement.unreported): the next spawn
    # there found "insufficient cpu" on a node with nothing running. Now its end is news.
    now = [1_000.0]
    ended = [0.0]
    pub, published = publisher(lambda: {"queue_depth": 0.0, "cpu_total": 2.0, "cpu_free": 2.0},
                               ended_accepted_at=lambda: ended[0], clock=lambda: now[0])
    assert await pub.publish_if_due()
    ended[0] = 999.5  # accepted before the published beacon was measured: that beacon showed it
    now[0] += 3.0
    assert not await pub.publish_if_due()
    ended[0] = 1_002.5  # accepted after it, ended before the next: the load looks the same
    now[0] += 0.1
    assert await pub.publish_if_due() and len(published) == 2
    now[0] += 3.0
    assert not await pub.publish_if_due()  # once
