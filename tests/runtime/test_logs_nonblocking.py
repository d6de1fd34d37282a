"""WorkloadManager.read_logs must never stall the event loop.

Every test reads logs while a ticker (``asyncio.sleep(0.05)`` in a loop)
runs on the same loop, and asserts that the largest gap between two ticks
stays far below the time the read takes. A read that blocked the loop, as a
synchronous ``subprocess.run`` or ``open()`` would, shows up as a gap as long
as the read itself.

Slow reads are made real rather than mocked where that is possible: a log
file that is a FIFO makes ``open()`` block until a writer shows up (a second
later). Only the engine is faked (``fake_engine``): Docker-style
``<engine> logs`` has to be *slow*, which a real Podman answering in
milliseconds cannot be made to be, so a tiny shell script stands in for the
engine binary and sleeps before it prints.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from hypercore.runtime.exec import ExecDriver
from hypercore.runtime.manager import LOG_FILENAME, WorkloadManager
from hypercore.runtime.oci import OCIDriver
from hypercore.store import WorkloadRecord, WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id

NODE = "node-logs"
ENGINE_DELAY = 2.0  # how long the fake engine takes to answer `logs`
MAX_GAP = 0.5  # the loop may never be stalled longer than this
T = TypeVar("T")


async def max_tick_gap(work: Awaitable[T], tick: float = 0.05) -> tuple[T, float, float]:
    """Await ``work`` while a ticker runs; (its result, the largest gap between ticks, seconds taken)."""
    gaps: list[float] = []
    started = time.monotonic()

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)  # let the ticker start before the work does
    try:
        result = await work
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
    return result, max(gaps, default=float("inf")), time.monotonic() - started


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WorkloadStore]:
    s = WorkloadStore(tmp_path / "data")
    try:
        yield s
    finally:
        s.close()


def fake_engine(tmp_path: Path) -> Path:
    """A stand-in for the `docker` binary (see the module docstring): `logs` answers slowly."""
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = logs ]; then sleep {ENGINE_DELAY}; echo "out of $2"; echo "err of $2" >&2; exit 0; fi\n'
        'echo "fake engine: $1 is not faked" >&2; exit 125\n'
    )
    script.chmod(0o755)
    return script


def finished_record(driver: str, handle: dict[str, object] | None) -> WorkloadRecord:
    return WorkloadRecord(
        id=new_workload_id(),
        spec=WorkloadSpec(image_ref="localhost/fake:1") if driver == "container" else WorkloadSpec(command="true"),
        state=WorkloadState.EXITED,
        driver=driver,
        node=NODE,
        created_at=time.time(),
        handle=handle,
        exit_code=0,
    )


@pytest.fixture
async def engine_manager(store: WorkloadStore, tmp_path: Path) -> AsyncIterator[tuple[WorkloadManager, OCIDriver]]:
    driver = OCIDriver(str(fake_engine(tmp_path)), node_name=NODE, flavor="docker")
    manager = WorkloadManager(store, tmp_path / "data", {"container": driver}, NODE)
    try:
        yield manager, driver
    finally:
        await manager.close()


async def test_slow_engine_logs_do_not_block_the_loop(
    engine_manager: tuple[WorkloadManager, OCIDriver], store: WorkloadStore
) -> None:
    manager, driver = engine_manager
    assert driver.log_driver == "engine"  # Docker: the engine keeps the log, read with `<engine> logs`
    record = finished_record(
        "container", {"engine": driver.engine, "container_id": "c0ffee" * 4, "name": "hc-x", "log_driver": "engine"}
    )
    store.insert(record)

    logs, gap, took = await max_tick_gap(manager.read_logs(record.id))

    assert took >= ENGINE_DELAY * 0.9, "the fake engine did not delay; the test proves nothing"
    assert gap < MAX_GAP, f"the event loop was stalled for {gap:.2f}s during a {took:.2f}s read"
    # stderr is merged into stdout, as `docker logs` shows both streams.
    assert sorted(logs.splitlines()) == [f"err of {'c0ffee' * 4}".encode(), f"out of {'c0ffee' * 4}".encode()]
    assert await manager.read_logs(record.id, tail_bytes=7) == logs[-7:]
    assert await manager.read_logs(record.id, tail_bytes=0) == b""


async def test_slow_engine_is_cut_off_by_the_command_timeout(
    engine_manager: tuple[WorkloadManager, OCIDriver], store: WorkloadStore
) -> None:
    manager, driver = engine_manager
    driver.command_timeout = 0.3
    record = finished_record(
        "container", {"engine": driver.engine, "container_id": "c0ffee" * 4, "name": "hc-x", "log_driver": "engine"}
    )
    store.insert(record)
    logs, gap, took = await max_tick_gap(manager.read_logs(record.id))
    assert logs == b"" and took < ENGINE_DELAY * 0.75 and gap < MAX_GAP


def write_later(path: Path, data: bytes, delay: float) -> threading.Thread:
    """Open the FIFO ``path`` for writing after ``delay`` s (that unblocks its reader) and write ``data``."""

    def run() -> None:
        time.sleep(delay)
        with open(path, "wb") as fifo:  # blocks until the reader has opened it too
            fifo.write(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["exec", "container-k8s-file"])
async def test_log_file_reads_do_not_block_the_loop(store: WorkloadStore, tmp_path: Path, kind: str) -> None:
    """The log file is read in a worker thread: a FIFO as the log makes ``open()`` block for real."""
    if kind == "exec":
        driver_name, handle, drivers = "exec", None, {"exec": ExecDriver()}
        content, expected = b"line 1\nline 2\n", b"line 1\nline 2\n"
    else:
        # No engine is called for a k8s-file log (Podman's conmon wrote it).
        oci = OCIDriver("podman", node_name=NODE, flavor="podman")
        driver_name, drivers = "container", {"container": oci}
        handle = {"engine": oci.engine, "container_id": "ab" * 32, "name": "hc-y", "log_driver": "k8s-file"}
        content = b"2026-01-01T00:00:00.000000001+00:00 stdout F line 1\n2026-01-01T00:00:00.2+00:00 stderr F line 2\n"
        expected = b"line 1\nline 2\n"
    manager = WorkloadManager(store, tmp_path / "data", drivers, NODE)  # type: ignore[arg-type]
    try:
        record = finished_record(driver_name, handle)
        store.insert(record)
        path = manager.logs_path(record.id)
        assert path.name == LOG_FILENAME
        path.parent.mkdir(parents=True, mode=0o700)
        os.mkfifo(path, 0o600)
        writer = write_later(path, content, delay=1.0)

        logs, gap, took = await asyncio.wait_for(max_tick_gap(manager.read_logs(record.id)), 10)

        writer.join(5)
        assert took >= 0.9, "the read did not wait for the writer; the test proves nothing"
        assert gap < MAX_GAP, f"the event loop was stalled for {gap:.2f}s during a {took:.2f}s read"
        assert logs == expected
    finally:
        await manager.close()
