from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.inprocess.harness import FakeCluster


@pytest_asyncio.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(tmp_path)
    try:
        yield cluster
    finally:
        await cluster.close()
