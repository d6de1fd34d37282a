"""The exec driver's zygote (hypercore.runtime.launch, .handoff) with real processes.

A start hands its workload to a supervisor process loaded ahead of need, which
forks the workload's supervisor (about 1 ms) instead of a new one loading
Python (about 18 ms of CPU of a 29 ms start), and stays loaded. These tests
check that the zygote is really used and stays one process, that what a
supervisor started for the workload guarantees still holds for a forked one
(its lock, its log, its stop, a cancelled start), that a dead zygote or an
oversized job falls back to a supervisor of its own, and that the zygote does
not outlive the driver while the supervisors it forked do.
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

import hypercore.runtime.uids as uids
from hypercore.runtime import ExecDriver, RuntimeRefused, WorkloadManager
from hypercore.runtime.handoff import MAX_JOB
from hypercore.runtime.isolation import lock_held, read_proc_stat
from hypercore.store import WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.runtime.test_exec_runtime import _kill_verified, assert_gone, wait_for_state

NODE = "node-a"


def zygotes() -> list[int]:
    """Children of this process started as the zygote (``supervisor.py --zygote``) and alive."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] not in ("Z", "X") and b"--zygote" in argv:
            found.append(int(entry))
    return found


async def the_zygote(timeout: float = 10.0) -> int:
    """The driver's one zygote, once it is there."""
    deadline = time.monotonic() + timeout
    while len(found := zygotes()) != 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected one zygote, found {found}")
        await asyncio.sleep(0.02)
    return found[0]


def parent_of(pid: int) -> int:
    stat = read_proc_stat(pid)
    assert stat is not None
    return stat.ppid


@pytest.fixture
async def zygote_manager(tmp_path: Path) -> AsyncIterator[tuple[WorkloadManager, ExecDriver]]:
    store = WorkloadStore(tmp_path / "data")
    driver = ExecDriver(zygote=True)
    m = WorkloadManager(store, tmp_path / "data", {"exec": driver}, NODE)
    driver.warm_up()
    try:
        yield m, driver
    finally:
        _kill_verified(store)
        await m.close()
        store.close()


async def test_a_start_is_forked_from_the_zygote_which_stays_loaded(
    zygote_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    m, driver = zygote_manager
    zygote = await the_zygote()
    record = await m.accept(WorkloadSpec(command="echo from-the-zygote; sleep 60", env={"GREETING": "hi"}))
    assert record.state is WorkloadState.RUNNING
    supervisor = record.handle["supervisor_pid"]  # type: ignore[index]
    assert supervisor != zygote and parent_of(supervisor) == zygote  # forked, not started
    assert await the_zygote() == zygote  # and nothing to replace
    workdir = m.logs_path(record.id).parent
    assert lock_held(workdir / "supervisor.lock")  # the lock went with the message: held by the supervisor
    assert (workdir / "supervisor.log").exists()
    # Everything a supervisor started for the workload does, this one does: logs, a second start refused, stop.
    for _ in range(100):
        if b"from-the-zygote" in await m.read_logs(record.id):
            break
        await asyncio.sleep(0.02)
    assert b"from-the-zygote\n" in await m.read_logs(record.id)
    with pytest.raises(RuntimeRefused, match="already runs"):
        await driver.start(record.id, WorkloadSpec(command="true"), m.logs_path(record.id))
    stopped = await m.stop(record.id, grace=5.0)
    assert stopped.state is WorkloadState.STOPPED and stopped.exit_code == 128 + signal.SIGTERM
    await assert_gone(supervisor)  # the zygote reaped it: no zombie


async def test_starts_in_a_row_and_at_once_are_all_forked(zygote_manager: tuple[WorkloadManager, ExecDriver]) -> None:
    m, _driver = zygote_manager
    zygote = await the_zygote()
    started = [await m.accept(WorkloadSpec(command="sleep 60")) for _ in range(3)]
    started += await asyncio.gather(*(m.accept(WorkloadSpec(command="sleep 60")) for _ in range(4)))
    supervisors = {r.handle["supervisor_pid"] for r in started}  # type: ignore[index]
    assert len(supervisors) == 7 and {parent_of(pid) for pid in supervisors} == {zygote}
    assert len({r.handle["uid"] for r in started}) == 7  # type: ignore[index]  # each its own uid, as always
    assert all(r.state is WorkloadState.RUNNING for r in started)
    assert zygotes() == [zygote]


async def test_a_failed_start_is_refused_and_its_forked_supervisor_gone(tmp_path: Path) -> None:
    # A workload its supervisor cannot start (here: no uid left in a range of one, held by a first workload):
    # the refusal comes after the forked supervisor has ended, so its lock is free for a retry.
    driver = ExecDriver(zygote=True, uid_base=uids.UID_BASE + uids.UID_COUNT - 90, uid_count=1)  # no other test's
    driver.warm_up()
    try:
        first_id, second_id = new_workload_id(), new_workload_id()
        first = await driver.start(first_id, WorkloadSpec(command="sleep 60"),
                                   tmp_path / "data" / "workloads" / first_id / "output.log")
        second_log = tmp_path / "data" / "workloads" / second_id / "output.log"
        with pytest.raises(RuntimeRefused, match="no free uid"):
            await driver.start(second_id, WorkloadSpec(command="sleep 60"), second_log)
        assert not lock_held(second_log.parent / "supervisor.lock")
        await driver.stop(first, grace=1.0)
    finally:
        await driver.close()


async def test_a_zygote_that_died_is_replaced_and_the_start_does_not_fail(
    zygote_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    m, _driver = zygote_manager
    zygote = await the_zygote()
    os.kill(zygote, signal.SIGKILL)
    await asyncio.sleep(0.1)  # dead before the start: its socket is closed
    record = await m.accept(WorkloadSpec(command="sleep 60"))
    assert record.state is WorkloadState.RUNNING
    supervisor = record.handle["supervisor_pid"]  # type: ignore[index]
    assert parent_of(supervisor) == os.getpid()  # one started for it
    await assert_gone(zygote)  # reaped, not left as a zombie
    new = await the_zygote()
    assert new != zygote
    later = await m.accept(WorkloadSpec(command="sleep 60"))
    assert parent_of(later.handle["supervisor_pid"]) == new  # type: ignore[index]


async def test_a_workload_too_big_for_one_message_gets_a_supervisor_of_its_own(
    zygote_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    m, _driver = zygote_manager
    zygote = await the_zygote()
    big = {f"V{i}": "x" * 30000 for i in range(MAX_JOB // 30000 + 1)}  # over one message, under the spec's limits
    record = await m.accept(WorkloadSpec(command='test "${#V0}" = 30000 && sleep 60', env=big))
    assert record.state is WorkloadState.RUNNING
    assert parent_of(record.handle["supervisor_pid"]) == os.getpid()  # type: ignore[index]
    assert zygotes() == [zygote]  # still there
    await asyncio.sleep(0.3)
    assert m.get(record.id).state is WorkloadState.RUNNING  # its environment arrived whole


async def test_the_zygote_does_not_outlive_the_driver_but_its_supervisors_do(tmp_path: Path) -> None:
    store = WorkloadStore(tmp_path / "data")
    driver = ExecDriver(zygote=True)
    m = WorkloadManager(store, tmp_path / "data", {"exec": driver}, NODE)
    try:
        driver.warm_up()
        zygote = await the_zygote()
        record = await m.accept(WorkloadSpec(command="sleep 60"))
        await m.close()  # closes the driver: the zygote's socket closes, and it exits by itself
        await assert_gone(zygote)
        assert zygotes() == []
        assert driver.is_running(record.handle)  # type: ignore[arg-type]  # workloads outlive the agent's parts
    finally:
        _kill_verified(store)
        await m.close()
        store.close()


async def test_a_driver_without_the_zygote_starts_none(tmp_path: Path) -> None:
    store = WorkloadStore(tmp_path / "data")
    m = WorkloadManager(store, tmp_path / "data", {"exec": ExecDriver()}, NODE)
    try:
        record = await m.accept(WorkloadSpec(command="sleep 60"))
        await wait_for_state(m, record.id, WorkloadState.RUNNING)
        assert zygotes() == []
        assert parent_of(record.handle["supervisor_pid"]) == os.getpid()  # type: ignore[index]
    finally:
        _kill_verified(store)
        await m.close()
        store.close()


async def test_a_start_cancelled_while_it_takes_the_lock_leaves_the_lock_free(
    zygote_manager: tuple[WorkloadManager, ExecDriver], tmp_path: Path,
) -> None:
    # Found in review: cancelled (a placement deadline) while a thread opened and locked supervisor.lock, the
    # start left the descriptor open in the agent: the lock held for good, every later start of that id refused
    # as "a supervisor already runs", and locate() waiting for a supervisor that never was.
    _m, driver = zygote_manager
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


async def test_a_start_cancelled_after_the_fork_stops_its_supervisor(
    zygote_manager: tuple[WorkloadManager, ExecDriver], tmp_path: Path,
) -> None:
    # Cancelled once the zygote has the job: the forked supervisor is told who to be before it answers, so the
    # driver can stop it (its pid with its start time): nothing of the workload is left running, the lock is free.
    _m, driver = zygote_manager
    await the_zygote()
    for delay in (0.001, 0.005, 0.02):
        wid = new_workload_id()
        log_path = tmp_path / "data" / "workloads" / wid / "output.log"
        task = asyncio.ensure_future(driver.start(wid, WorkloadSpec(command="sleep 60"), log_path))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeRefused):
            handle = await task
            await driver.stop(handle, grace=1.0)  # it had answered before the cancel landed
        deadline = time.monotonic() + 10
        while lock_held(log_path.parent / "supervisor.lock") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not lock_held(log_path.parent / "supervisor.lock")
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and (s := read_proc_stat(int(p))) is not None
                    and s.ppid == zygotes()[0] and s.alive]
        assert children == [], children


async def test_a_workload_started_by_a_forked_supervisor_holds_nothing_of_the_agent_or_the_zygote(
    zygote_manager: tuple[WorkloadManager, ExecDriver],
) -> None:
    # The zygote got the lock, the log and the answer socket as passed descriptors and listens on a socket of
    # its own: none of them may reach the workload, which runs as a uid of its own, not root, as one started by
    # a supervisor of its own does.
    m, _driver = zygote_manager
    zygote = await the_zygote()
    record = await m.accept(WorkloadSpec(command="ls -l /proc/self/fd/ > fds.txt; id -u > uid.txt; sleep 60"))
    assert parent_of(record.handle["supervisor_pid"]) == zygote  # type: ignore[index]
    home = m.logs_path(record.id).parent / "home"
    for _ in range(100):
        if (home / "uid.txt").exists() and (home / "uid.txt").read_text().strip():
            break
        await asyncio.sleep(0.02)
    assert int((home / "uid.txt").read_text()) == record.handle["uid"] != 0  # type: ignore[index]
    links = [line.split("->")[-1].strip() for line in (home / "fds.txt").read_text().splitlines() if "->" in line]
    assert not [t for t in links if "socket" in t or "supervisor" in t or "lock" in t], links
    assert len(links) <= 4, links  # stdin, stdout, stderr, and the directory `ls` reads
    # Nor does the supervisor hold the zygote's socket: only the zygote listens on it.
    sup_fds = [os.readlink(f"/proc/{record.handle['supervisor_pid']}/fd/{fd}")  # type: ignore[index]
               for fd in os.listdir(f"/proc/{record.handle['supervisor_pid']}/fd")]  # type: ignore[index]
    zyg_socket = {os.readlink(f"/proc/{zygote}/fd/{fd}") for fd in ("0", "1")}
    assert not zyg_socket & set(sup_fds), (zyg_socket, sup_fds)


async def test_a_start_cancelled_before_the_supervisor_said_who_it_is_still_stops_it(
    zygote_manager: tuple[WorkloadManager, ExecDriver], tmp_path: Path,
) -> None:
    # The zygote is slow (stopped here): the start is cancelled while it waits for the forked supervisor's pid.
    # That supervisor must not go on to start the workload with nobody knowing (its lock held for good, the
    # workload running unrecorded): the abort waits a moment to learn its pid and stops it, and one that says
    # who it is after the driver gave up finds the socket closed and exits before doing anything.
    _m, driver = zygote_manager
    zygote = await the_zygote()
    wid = new_workload_id()
    log_path = tmp_path / "data" / "workloads" / wid / "output.log"
    os.kill(zygote, signal.SIGSTOP)
    try:
        task = asyncio.ensure_future(driver.start(wid, WorkloadSpec(command="sleep 60"), log_path))
        await asyncio.sleep(0.3)  # handed: waiting for the supervisor to say who it is
        task.cancel()
        await asyncio.sleep(0.1)
    finally:
        os.kill(zygote, signal.SIGCONT)
    with contextlib.suppress(asyncio.CancelledError, RuntimeRefused):
        await task
    deadline = time.monotonic() + 10
    while lock_held(log_path.parent / "supervisor.lock") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not lock_held(log_path.parent / "supervisor.lock")
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and (s := read_proc_stat(int(p))) is not None
                and s.ppid == zygote and s.alive]
    assert children == [], children
