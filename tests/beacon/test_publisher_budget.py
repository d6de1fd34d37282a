"""The beacon stays within a gossip budget: only news is published, and at most every refresh in steady state."""

from __future__ import annotations

from typing import Any

from hypercore.beacon.keys import generate
from hypercore.beacon.publisher import BeaconPublisher
from hypercore.metrics import AgentMetrics


async def test_jittery_links_and_small_load_changes_publish_nothing_new() -> None:
    now = [1_000.0]
    sample: dict[str, Any] = {"latency_ms": 1.0, "jitter_ms": 0.1, "packet_loss": 0.0, "queue_depth": 4.0,
                              "capabilities": ("exec",), "cpu_total": 8.0, "cpu_free": 6.0, "mem_total_mb": 1000.0,
                              "mem_free_mb": 900.0}
    published: list[dict[str, str]] = []

    async def set_tags(tags: dict[str, str]) -> None:
        published.append(tags)

    pub = BeaconPublisher(node="n", key=generate(), api=":8001", price_per_gb=0.01, reputation=1.0,
                          sample=lambda: dict(sample), set_tags=set_tags, metrics=AgentMetrics(),
                          clock=lambda: now[0])
    assert await pub.publish_if_due() and len(published) == 1
    # 29 s of wobbling links, one more workload (4 → 5: same step) and a little less free CPU: no update.
    for i in range(29):
        now[0] += 1.0
        sample.update(latency_ms=1.0 + i % 3, jitter_ms=0.1 * i, packet_loss=float(i % 2))
        if i == 10:
            sample.update(queue_depth=5.0, cpu_free=5.9)
        await pub.publish_if_due()
    assert len(published) == 1
    # Real news (the queue doubled) goes out at once, not waiting for the refresh.
    now[0] += 0.5
    sample["queue_depth"] = 8.0
    await pub.publish_if_due()
    assert len(published) == 2
    # More news right after waits for min_interval (2 s): a burst becomes one update.
    now[0] += 0.5
    sample["queue_depth"] = 16.0
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
