"""A stop that meets a start: real exec workloads, a real registry; only the moment of the stop is arranged.

Found under the full parallel suite (issue 9): a node frozen during a spawn
thaws, its start returns late, and the origin's retraction arrives in the
same instant. stop() read the record while it was still PENDING (no handle),
the start then recorded RUNNING and saw no stop request, and the stop went on
with the stale record: it marked the workload STOPPED and left it running.
Every later stop ("stopping a late copy") saw STOPPED and did nothing, so a
second copy ran on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hypercore.devcluster import live_workload_processes
from hypercore.runtime import ExecDriver, WorkloadManager
from hypercore.runtime.base import Handle
from hypercore.store import WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState


class StopDuringStart(ExecDriver):
    """An exec driver that, the moment a real start returns, has the manager asked to stop that workload."""

    manager: WorkloadManager | None = None
    stop_task: asyncio.Future[Any] | None = None

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> Handle:
        handle = await super().start(workload_id, spec, log_path)
        assert self.manager is not None
        self.stop_task = asyncio.ensure_future(self.manager.stop(workload_id, grace=1.0, reason="retracted"))
        await asyncio.sleep(0)  # stop() runs up to its first await: it has seen the record, PENDING
        return handle


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[WorkloadManager, StopDuringStart]]:
    driver = StopDuringStart()
    store = WorkloadStore(tmp_path / "data")
    manager = WorkloadManager(store, tmp_path / "data", {"exec": driver}, "race-node")
    driver.manager = manager
    try:
        yield manager, driver
    finally:
        for record in store.list():
            if record.handle and driver.is_running(record.handle):
                await driver.stop(record.handle, 0)
        await manager.close()
        store.close()


async def test_a_stop_that_arrives_as_the_start_returns_ends_the_workload(
        setup: tuple[WorkloadManager, StopDuringStart]) -> None:
    manager, driver = setup
    await manager.accept(WorkloadSpec(command="exec sleep 64.5678"), workload_id="6c1f1d5e-3a2b-4c1d-9e8f-0a1b2c3d4e5f")
    assert driver.stop_task is not None
    stopped = await driver.stop_task
    assert stopped.state is WorkloadState.STOPPED
    record = manager.get(stopped.id)
    assert record.state is WorkloadState.STOPPED and record.error == "retracted"
    # The runtime's truth, not the registry's: no process of it is left.
    assert record.handle is not None and not driver.is_running(record.handle)
    assert live_workload_processes()[stopped.id] == 0
