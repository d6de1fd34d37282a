"""The exec driver's spare supervisors (hypercore.runtime.launch, .handoff) with real processes.

A start hands its workload to a supervisor started ahead of need instead of
waiting for a new one to load Python (about 18 ms of a 29 ms start). These
tests check that the spares are really used, that what a supervisor started
for the workload guarantees still holds for them (its lock, its log, its
stop), that dead spares or an oversized job fall back to a supervisor of
its own, and that no spare outlives the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypercore.runtime import ExecDriver, RuntimeRefused, WorkloadManager
from hypercore.runtime.handoff import MAX_JOB
from hypercore.runtime.isolation import lock_held
from hypercore.store import WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.runtime.test_exec_runtime import _kill_verified, assert_gone, wait_for_state

NODE = "node-a"
SPARES = 2  # the agent's default (--exec-spares)


def spare_processes(exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Children of this process started as spares (``supervisor.py --spare``) and alive, but `exclude`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] not in ("Z", "X") and b"--spare" in argv:
            found.append(int(entry))
    return found


async def waiting_spares(exclude: set[int] = frozenset(), timeout: float = 10.0) -> set[int]:  # type: ignore[assignment]
    """The SPARES spare supervisors the driver keeps, once they are all there."""
    deadline = time.monotonic() + timeout
    while len(found := spare_processes(exclude)) != SPARES:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {SPARES} waiting spare supervisors, found {found}")
        await asyncio.sleep(0.02)
    return set(found)


@pytest.fixture
async def spare_manager(tmp_path: Path) -> AsyncIterator[tuple[WorkloadManager, ExecDriver]]:
    store = WorkloadStore(tmp_path / "data")
    driver = ExecDriver(spares=SPARES)
    m = WorkloadManager(store, tmp_path / "data", {"exec": driver}, NODE)
    driver.warm_up()
    try:
        yield m, driver
    finally:
        _kill_verified(store)
        await m.close()
        store.close()


async def test_a_start_is_handed_to_the_spare_and_a_new_spare_waits_after_it(
    spare_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    m, _driver = spare_manager
    spares = await waiting_spares()
    record = await m.accept(WorkloadSpec(command="echo from-the-spare; sleep 60", env={"GREETING": "hi"}))
    assert record.state is WorkloadState.RUNNING
    spare = record.handle["supervisor_pid"]  # type: ignore[index]
    assert spare in spares  # a spare became its supervisor
    workdir = m.logs_path(record.id).parent
    assert lock_held(workdir / "supervisor.lock")  # the lock went with the message: held by the supervisor
    assert (workdir / "supervisor.log").exists()
    assert len(await waiting_spares(exclude={spare}) - spares) == 1  # replaced
    # Everything a supervisor started for the workload does, this one does: logs, a second start refused, stop.
    for _ in range(100):
        if b"from-the-spare" in await m.read_logs(record.id):
            break
        await asyncio.sleep(0.02)
    assert b"from-the-spare\n" in await m.read_logs(record.id)
    with pytest.raises(RuntimeRefused, match="already runs"):
        await _driver.start(record.id, WorkloadSpec(command="true"), m.logs_path(record.id))
    stopped = await m.stop(record.id, grace=5.0)
    assert stopped.state is WorkloadState.STOPPED and stopped.exit_code == 128 + signal.SIGTERM
    await assert_gone(spare)


async def test_starts_in_a_row_use_the_spares_then_their_replacements(spare_manager: tuple[WorkloadManager, ExecDriver]) -> None:
    m, _driver = spare_manager
    spares = await waiting_spares()
    started = [await m.accept(WorkloadSpec(command="sleep 60")) for _ in range(SPARES + 1)]
    supervisors = [r.handle["supervisor_pid"] for r in started]  # type: ignore[index]
    assert set(supervisors[:SPARES]) == spares  # those waiting, then one started meanwhile
    assert supervisors[SPARES] not in spares and len(set(supervisors)) == SPARES + 1
    assert len({r.handle["uid"] for r in started}) == SPARES + 1  # type: ignore[index]  # each its own uid, as always
    assert all(r.state is WorkloadState.RUNNING for r in started)


async def test_a_spare_that_died_is_replaced_and_the_start_does_not_fail(
    spare_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    m, _driver = spare_manager
    spares = await waiting_spares()
    for pid in spares:
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.1)  # dead before the start: their sockets are closed
    record = await m.accept(WorkloadSpec(command="sleep 60"))
    assert record.state is WorkloadState.RUNNING
    supervisor = record.handle["supervisor_pid"]  # type: ignore[index]
    assert b"--spare" not in Path(f"/proc/{supervisor}/cmdline").read_bytes()  # one started for it
    for pid in spares:
        await assert_gone(pid)  # reaped, not left as zombies
    assert not await waiting_spares(exclude={supervisor}) & spares  # new ones


async def test_a_workload_too_big_for_one_message_gets_a_supervisor_of_its_own(
    spare_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    m, _driver = spare_manager
    spares = await waiting_spares()
    big = {f"V{i}": "x" * 30000 for i in range(MAX_JOB // 30000 + 1)}  # over one message, under the spec's limits
    record = await m.accept(WorkloadSpec(command='test "${#V0}" = 30000 && sleep 60', env=big))
    assert record.state is WorkloadState.RUNNING
    assert record.handle["supervisor_pid"] not in spares  # type: ignore[index]
    assert set(spare_processes(exclude={record.handle["supervisor_pid"]})) == spares  # type: ignore[index]  # still waiting
    await asyncio.sleep(0.3)
    assert m.get(record.id).state is WorkloadState.RUNNING  # its environment arrived whole


async def test_no_spare_outlives_the_driver(tmp_path: Path) -> None:
    store = WorkloadStore(tmp_path / "data")
    driver = ExecDriver(spares=SPARES)
    m = WorkloadManager(store, tmp_path / "data", {"exec": driver}, NODE)
    try:
        driver.warm_up()
        spares = await waiting_spares()
        await m.close()  # closes the driver: its spares' sockets close, and they exit by themselves
        for pid in spares:
            await assert_gone(pid)
        assert spare_processes() == []
    finally:
        await m.close()
        store.close()


async def test_a_driver_without_a_spare_starts_none(tmp_path: Path) -> None:
    store = WorkloadStore(tmp_path / "data")
    m = WorkloadManager(store, tmp_path / "data", {"exec": ExecDriver()}, NODE)
    try:
        record = await m.accept(WorkloadSpec(command="sleep 60"))
        await wait_for_state(m, record.id, WorkloadState.RUNNING)
        assert spare_processes(exclude={record.handle["supervisor_pid"]}) == []  # type: ignore[index]
    finally:
        _kill_verified(store)
        await m.close()
        store.close()


async def test_a_start_cancelled_while_it_takes_the_lock_leaves_the_lock_free(
    spare_manager: tuple[WorkloadManager, ExecDriver], tmp_path: Path,
) -> None:
    # Found in review: cancelled (a placement deadline) while a thread opened and locked supervisor.lock, the
    # start left the descriptor open in the agent: the lock held for good, every later start of that id refused
    # as "a supervisor already runs", and locate() waiting for a supervisor that never was.
    _m, driver = spare_manager
    wid = new_workload_id()
    log_path = tmp_path / "data" / "workloads" / wid / "output.log"  # where the manager would put it
    for _ in range(20):  # the lock is taken in a thread: cancel at once, and after each of the first few steps
        task = asyncio.ensure_future(driver.start(wid, WorkloadSpec(command="sleep 60"), log_path))
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeRefused):
            await task
        await asyncio.sleep(0.05)  # the thread's open has finished, and its descriptor was closed
        assert not lock_held(log_path.parent / "supervisor.lock")
    handle = await driver.start(wid, WorkloadSpec(command="sleep 60"), log_path)  # and the id starts after all
    assert driver.is_running(handle)
    await driver.stop(handle, grace=1.0)


async def test_a_workload_started_by_a_spare_holds_nothing_of_the_agent_or_its_supervisor(
    spare_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    # The spare got its lock and log as passed descriptors and talked over a socket: none of them may reach the
    # workload, which runs as a uid of its own, not root, as one started by a supervisor of its own does.
    m, _driver = spare_manager
    spares = await waiting_spares()
    record = await m.accept(WorkloadSpec(command="ls -l /proc/self/fd/ > fds.txt; id -u > uid.txt; sleep 60"))
    assert record.handle["supervisor_pid"] in spares  # type: ignore[index]
    home = m.logs_path(record.id).parent / "home"
    for _ in range(100):
        if (home / "uid.txt").exists() and (home / "uid.txt").read_text().strip():
            break
        await asyncio.sleep(0.02)
    assert int((home / "uid.txt").read_text()) == record.handle["uid"] != 0  # type: ignore[index]
    links = [line.split("->")[-1].strip() for line in (home / "fds.txt").read_text().splitlines() if "->" in line]
    assert not [t for t in links if "socket" in t or "supervisor" in t or "lock" in t], links
    assert len(links) <= 4, links  # stdin, stdout, stderr, and the directory `ls` reads
