from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.inprocess.harness import FakeCluster


@pytest_asyncio.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(tmp_path)
    try:
        yield cluster
    finally:
        await cluster.close()


# Three regions (tests/inprocess/test_geo.py, test_origin_links.py): 2-D positions in ms of RTT (minus the
# 1 ms of the coordinates' heights), standing in for Serf's Vivaldi coordinates: eu–us 80 ms, eu–ap 160 ms,
# us–ap 120 ms, about 1–2 ms inside a region.
REGIONS = {"eu": (0.0, 0.0), "us": (79.0, 0.0), "ap": (109.88, 114.92)}
NODES = {"eu-1": "eu", "eu-2": "eu", "eu-3": "eu", "us-1": "us", "us-2": "us", "ap-1": "ap", "ap-2": "ap"}


@pytest.fixture
def geo(fake: FakeCluster) -> FakeCluster:
    for i, (name, region) in enumerate(sorted(NODES.items())):
        x, y = REGIONS[region]
        # The first node of each region is where users ask; it has no room, so it never takes the work itself.
        fake.add(name, cpu=0.01 if name.endswith("-1") else 8.0, price=0.01 + i * 0.001,
                 position_ms=(x + 0.3 * (i % 2), y), region=region)
    return fake
