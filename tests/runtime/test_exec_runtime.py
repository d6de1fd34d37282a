"""The node-local runtime with real processes and a real SQLite registry.

Every test that starts a process leaves it to the fixtures to kill it, so a
failing assertion never leaves a `sleep 60` behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hypercore.devcluster import live_workload_processes
from hypercore.errors import HypercoreError
from hypercore.runtime import (
    ExecDriver,
    RuntimeRefused,
    WorkloadManager,
    WorkloadNotFound,
)
from hypercore.runtime.exec import read_proc_stat
from hypercore.runtime.manager import LOST_ERROR, NOT_STARTED_ERROR
from hypercore.store import (
    SCHEMA_VERSION,
    DuplicateWorkload,
    WorkloadRecord,
    WorkloadStore,
)
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.waiting import eventually

NODE = "node-a"


def _kill_verified(store: WorkloadStore) -> None:
    """SIGKILL the group of every recorded workload that is provably still ours."""
    checker = ExecDriver()
    for record in store.list():
        handle = record.handle
        if handle and checker.is_running(handle):
            try:
                os.killpg(int(handle["pgid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[WorkloadStore]:
    s = WorkloadStore(data_dir)
    try:
        yield s
    finally:
        _kill_verified(s)
        s.close()


@pytest.fixture
async def manager(store: WorkloadStore, data_dir: Path) -> AsyncIterator[WorkloadManager]:
    m = WorkloadManager(store, data_dir, {"exec": ExecDriver()}, NODE)
    try:
        yield m
    finally:
        _kill_verified(store)
        await m.close()


@pytest.fixture
def strangers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started outside the manager; killed and reaped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def wait_for_state(m: WorkloadManager, wid: str, state: WorkloadState, timeout: float = 5.0) -> WorkloadRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = m.get(wid)
        if record.state is state:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"workload {wid} is {record.state}, expected {state}")
        await asyncio.sleep(0.02)


async def assert_gone(pid: int, timeout: float = 3.0) -> None:
    """The pid no longer exists (reaped, not merely a zombie)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still exists: {read_proc_stat(pid)}")
        await asyncio.sleep(0.02)


def shell_of(pid: int) -> int:
    """The workload's shell: ``pid`` itself, or its child when ``pid`` is the namespace's init (tini)."""
    if Path(f"/proc/{pid}/comm").read_text().strip() != "tini":
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def ignores_sigterm(pid: int) -> bool:
    """The process has SIGTERM set to ignored (what `trap '' TERM` does), per /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def group_has_live_members(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read_proc_stat(int(entry.name))
            if proc is not None and proc.pgrp == pgid and proc.alive:
                return True
    return False


def cmd(command: str, **env: str) -> WorkloadSpec:
    return WorkloadSpec(command=command, env=env)


# -- exec driver through the manager ------------------------------------------


async def test_exit_code_and_logs(manager: WorkloadManager, data_dir: Path) -> None:
    record = await manager.accept(cmd("echo hello; echo err >&2; exit 3"))
    done = await wait_for_state(manager, record.id, WorkloadState.EXITED)
    assert done.exit_code == 3
    assert done.finished_at is not None and done.started_at is not None
    logs = await manager.read_logs(record.id)
    assert b"hello\n" in logs and b"err\n" in logs
    assert await manager.read_logs(record.id, tail_bytes=4) == b"err\n"
    assert manager.logs_path(record.id) == data_dir / "workloads" / record.id / "output.log"
    assert stat.S_IMODE(manager.logs_path(record.id).stat().st_mode) == 0o600
    assert manager.queue_depth() == 0
    assert manager.ended_accepted_at == record.created_at  # the beacon publisher's news (a workload came and went)


async def test_stop_long_running(manager: WorkloadManager) -> None:
    record = await manager.accept(cmd("sleep 60"))
    assert record.state is WorkloadState.RUNNING
    assert manager.queue_depth() == 1
    pid = record.handle["pid"]  # type: ignore[index]
    assert record.handle["pgid"] == pid  # type: ignore[index]
    started = time.monotonic()
    stopped = await manager.stop(record.id, grace=5.0)
    assert time.monotonic() - started < 2.0
    assert stopped.state is WorkloadState.STOPPED
    assert stopped.exit_code == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # dash forks `sleep` rather than exec'ing it; the whole group must be dead.
    # (Dead, not necessarily reaped: an orphan is reaped by PID 1, and a
    # container's PID 1 may never do so.)
    assert not group_has_live_members(pid)
    # The watcher must not overwrite the requested stop with EXITED. A fixed
    # wait is right here: it checks that something does *not* happen.
    await asyncio.sleep(0.1)
    assert manager.get(record.id).state is WorkloadState.STOPPED
    assert manager.queue_depth() == 0


def voluntary_switches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for {pid}")


async def test_the_supervisor_of_a_running_workload_sleeps_until_something_happens(manager: WorkloadManager) -> None:
    # It woke every 0.5 s to look for an end that signals announce anyway: 512 wake-ups a second on a node
    # running 256 workloads. Now SIGCHLD and SIGTERM wake it (set_wakeup_fd), and a stop is as quick as before.
    record = await manager.accept(cmd("sleep 60"))
    supervisor = record.handle["supervisor_pid"]  # type: ignore[index]
    await asyncio.sleep(0.3)  # past its start
    before = voluntary_switches(supervisor)
    await asyncio.sleep(2.0)
    assert voluntary_switches(supervisor) - before <= 1  # it slept (4 wake-ups before)
    started = time.monotonic()
    stopped = await manager.stop(record.id, grace=5.0)
    assert stopped.state is WorkloadState.STOPPED and time.monotonic() - started < 2.0


async def test_sigterm_ignored_is_killed_after_grace(manager: WorkloadManager) -> None:
    record = await manager.accept(cmd("trap '' TERM; sleep 60"))
    pid = record.handle["pid"]  # type: ignore[index]
    await eventually(lambda: ignores_sigterm(shell_of(pid)), 5, "the shell to install its trap")
    started = time.monotonic()
    stopped = await manager.stop(record.id, grace=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0
    assert stopped.state is WorkloadState.STOPPED
    assert stopped.exit_code == 128 + signal.SIGKILL
    await assert_gone(record.handle["pid"])  # type: ignore[index]
    assert not group_has_live_members(record.handle["pgid"])  # type: ignore[index]


async def test_stop_is_idempotent(manager: WorkloadManager) -> None:
    record = await manager.accept(cmd("sleep 60"))
    first, second = await asyncio.gather(manager.stop(record.id), manager.stop(record.id))
    assert first.state is second.state is WorkloadState.STOPPED
    again = await manager.stop(record.id)
    assert again == first
    # Stopping something that already exited leaves it EXITED.
    quick = await manager.accept(cmd("exit 0"))
    exited = await wait_for_state(manager, quick.id, WorkloadState.EXITED)
    assert await manager.stop(quick.id) == exited


async def test_leftover_background_processes_end_with_the_workload(manager: WorkloadManager) -> None:
    record = await manager.accept(cmd("sleep 60 & echo $! > bg.pid; exit 0"))
    await wait_for_state(manager, record.id, WorkloadState.EXITED)
    # The workload's working directory is its home, a subdirectory it owns (the log and state are root's).
    workdir = manager.logs_path(record.id).parent
    state = json.loads((workdir / "state.json").read_text())
    if state["namespaces"]:  # bg.pid holds a pid of the workload's own PID namespace: look by its id
        # (not by uid: once the workload is gone its uid is free, and a test beside this one may take it)
        assert state["dedicated_uid"]
        await eventually(lambda: live_workload_processes("sleep")[record.id] == 0, 3, "the background sleep to end")
    else:
        proc = read_proc_stat(int((workdir / "home" / "bg.pid").read_text()))
        assert proc is None or not proc.alive


async def test_unknown_id(manager: WorkloadManager) -> None:
    wid = new_workload_id()
    with pytest.raises(WorkloadNotFound):
        manager.get(wid)
    with pytest.raises(WorkloadNotFound):
        await manager.stop(wid)
    with pytest.raises(WorkloadNotFound):
        await manager.read_logs(wid)


@pytest.mark.parametrize("bad", ["../../etc", "..", "/etc/passwd", "", "A0B1C2D3-0000-4000-8000-000000000000"])
async def test_path_traversal_ids_touch_nothing(manager: WorkloadManager, tmp_path: Path, bad: str) -> None:
    def snapshot() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*") if not p.name.endswith(("-wal", "-shm"))}

    before = snapshot()
    with pytest.raises(WorkloadNotFound):
        manager.get(bad)
    with pytest.raises(WorkloadNotFound):
        manager.logs_path(bad)
    with pytest.raises(WorkloadNotFound):
        await manager.read_logs(bad)
    with pytest.raises(WorkloadNotFound):
        await manager.stop(bad)
    with pytest.raises(RuntimeRefused):
        await manager.accept(cmd("touch pwned"), workload_id=bad)
    assert snapshot() == before
    assert not (tmp_path / "etc").exists()
    assert manager.list() == []


async def test_env_reaches_the_process(manager: WorkloadManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SECRET", "do-not-leak")
    record = await manager.accept(
        cmd('echo "g=$GREETING id=$HYPERCORE_WORKLOAD_ID home=$HOME pwd=$(pwd)"; env', GREETING="hi there")
    )
    await wait_for_state(manager, record.id, WorkloadState.EXITED)
    logs = (await manager.read_logs(record.id)).decode()
    home = manager.logs_path(record.id).parent / "home"  # its own directory, next to the root-owned log
    assert f"g=hi there id={record.id} home={home} pwd={home}" in logs
    assert "PATH=" in logs
    assert "do-not-leak" not in logs


async def test_spec_cannot_override_workload_id(manager: WorkloadManager) -> None:
    record = await manager.accept(cmd('echo "$HYPERCORE_WORKLOAD_ID"', HYPERCORE_WORKLOAD_ID="forged"))
    await wait_for_state(manager, record.id, WorkloadState.EXITED)
    assert await manager.read_logs(record.id) == f"{record.id}\n".encode()


async def test_request_id_dedupe(manager: WorkloadManager, store: WorkloadStore) -> None:
    spec = cmd("sleep 60")
    first = await manager.accept(spec, request_id="req-1", policy={"name": "low-latency"})
    second = await manager.accept(spec, request_id="req-1")
    assert second.id == first.id
    assert second.handle == first.handle
    assert len(store.list()) == 1
    assert manager.queue_depth() == 1
    assert store.get(first.id).policy == {"name": "low-latency"}  # type: ignore[union-attr]
    # A retry with the same workload id (and spec) is also answered, not re-run.
    third = await manager.accept(spec, workload_id=first.id)
    assert third.id == first.id and len(store.list()) == 1


async def test_image_without_container_driver_is_refused(manager: WorkloadManager, store: WorkloadStore) -> None:
    with pytest.raises(RuntimeRefused) as info:
        await manager.accept(WorkloadSpec(image_ref="nginx:latest"))
    message = str(info.value)
    assert "container" in message and "exec" in message
    assert manager.capabilities == ["exec"]
    assert store.list() == []


async def test_driver_refusal_is_recorded_failed(store: WorkloadStore, data_dir: Path) -> None:
    # An exec driver registered under "container" refuses image specs itself.
    m = WorkloadManager(store, data_dir, {"container": ExecDriver()}, NODE)
    try:
        with pytest.raises(RuntimeRefused):
            await m.accept(WorkloadSpec(image_ref="nginx:latest"), request_id="r")
        (record,) = store.list()
        assert record.state is WorkloadState.FAILED and record.error
        with pytest.raises(RuntimeRefused):  # a retry gets the same answer
            await m.accept(WorkloadSpec(image_ref="nginx:latest"), request_id="r")
    finally:
        await m.close()


async def test_capacity(store: WorkloadStore, data_dir: Path) -> None:
    m = WorkloadManager(store, data_dir, {"exec": ExecDriver()}, NODE, max_workloads=1)
    try:
        await m.accept(cmd("sleep 60"))
        with pytest.raises(RuntimeRefused, match="capacity"):
            await m.accept(cmd("sleep 60"))
    finally:
        _kill_verified(store)
        await m.close()


# -- restart without loss -------------------------------------------------------


async def test_adopt_after_restart(store: WorkloadStore, data_dir: Path) -> None:
    a = WorkloadManager(store, data_dir, {"exec": ExecDriver()}, NODE)
    try:
        record = await a.accept(cmd("echo up; sleep 60"))
        finished = await a.accept(cmd("exit 0"))
        await wait_for_state(a, finished.id, WorkloadState.EXITED)
    finally:
        await a.close()  # the agent goes away; its workloads do not
    pid = record.handle["pid"]  # type: ignore[index]
    os.kill(pid, 0)

    b = WorkloadManager(store, data_dir, {"exec": ExecDriver(adopted_poll_interval=0.05)}, NODE)
    try:
        adopted = await b.adopt()
        assert [r.id for r in adopted] == [record.id]
        assert b.get(record.id).state is WorkloadState.RUNNING
        assert b.get(finished.id).state is WorkloadState.EXITED
        assert b.queue_depth() == 1
        assert b"up\n" in await b.read_logs(record.id)
        stopped = await b.stop(record.id, grace=2.0)
        assert stopped.state is WorkloadState.STOPPED
        # Not the new manager's child, but its supervisor recorded how it ended.
        assert stopped.exit_code == 128 + signal.SIGTERM
        assert not ExecDriver().is_running(record.handle)  # type: ignore[arg-type]
        await assert_gone(pid)
    finally:
        await b.close()


async def test_adopt_marks_lost_workloads(store: WorkloadStore, data_dir: Path) -> None:
    wid = new_workload_id()
    store.insert(
        WorkloadRecord(
            id=wid,
            spec=cmd("sleep 60"),
            state=WorkloadState.RUNNING,
            driver="exec",
            node=NODE,
            created_at=time.time(),
            # Our own pid with a start time that is not ours: a recycled pid.
            handle={"pid": os.getpid(), "pgid": os.getpid(), "start_time": 1},
        )
    )
    pending = new_workload_id()
    store.insert(
        WorkloadRecord(id=pending, spec=cmd("true"), state=WorkloadState.PENDING, driver="exec", node=NODE, created_at=1.0)
    )
    m = WorkloadManager(store, data_dir, {"exec": ExecDriver()}, NODE)
    try:
        await m.adopt()
        lost = m.get(wid)
        assert lost.state is WorkloadState.EXITED
        assert lost.exit_code is None and lost.error == LOST_ERROR
        assert m.get(pending).state is WorkloadState.FAILED
        assert m.queue_depth() == 0
    finally:
        await m.close()


def _pending(store: WorkloadStore, command: str, request_id: str | None = None) -> WorkloadRecord:
    """A row as accept() writes it before the driver starts anything."""
    record = WorkloadRecord(id=new_workload_id(), spec=cmd(command), state=WorkloadState.PENDING, driver="exec",
                            node=NODE, created_at=time.time(), request_id=request_id)
    store.insert(record)
    return record


async def test_a_start_whose_handle_was_never_stored_is_found_by_id(store: WorkloadStore, data_dir: Path) -> None:
    # The agent wrote PENDING, the driver started the workload, and the agent died before storing the handle.
    driver = ExecDriver(adopted_poll_interval=0.05)
    running = _pending(store, "echo found; sleep 60")
    ended = _pending(store, "exit 4")
    never = _pending(store, "echo retried", "req-never")  # the agent died before the driver was even called
    for record in (running, ended):
        workdir = data_dir / "workloads" / record.id
        workdir.mkdir(parents=True)
        await driver.start(record.id, record.spec, workdir / "output.log")  # handle dropped
    await eventually(lambda: (data_dir / "workloads" / ended.id / "state.json").read_text().count('"ended"'), 5,
                     "the short one to end")

    m = WorkloadManager(store, data_dir, {"exec": ExecDriver(adopted_poll_interval=0.05)}, NODE)
    try:
        await m.adopt()
        adopted = m.get(running.id)
        assert adopted.state is WorkloadState.RUNNING and adopted.handle is not None
        assert ExecDriver().is_running(adopted.handle)
        assert b"found\n" in await m.read_logs(running.id)
        assert (m.get(ended.id).state, m.get(ended.id).exit_code) == (WorkloadState.EXITED, 4)
        assert (m.get(never.id).state, m.get(never.id).error) == (WorkloadState.FAILED, NOT_STARTED_ERROR)
        # Nothing of it ever ran, so the client's retry of the same request starts it (once).
        retried = await m.accept(never.spec, workload_id=never.id, request_id="req-never")
        assert retried.id == never.id and retried.started_at is not None
        assert (await wait_for_state(m, never.id, WorkloadState.EXITED)).exit_code == 0
        assert await m.read_logs(never.id) == b"retried\n"
        assert (await m.accept(never.spec, request_id="req-never")).id == never.id  # and not again
        stopped = await m.stop(running.id, grace=1.0)
        assert (stopped.state, stopped.exit_code) == (WorkloadState.STOPPED, 128 + signal.SIGTERM)
    finally:
        _kill_verified(store)
        await m.close()


async def test_a_workload_without_any_record_is_stopped_at_adopt(
    store: WorkloadStore, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = ExecDriver()
    wid = new_workload_id()
    workdir = data_dir / "workloads" / wid
    workdir.mkdir(parents=True)
    handle = await driver.start(wid, cmd("sleep 60"), workdir / "output.log")  # no row at all (a lost registry)
    m = WorkloadManager(store, data_dir, {"exec": driver}, NODE)
    try:
        await m.adopt()
        assert not driver.is_running(handle)
        assert f"stopping workload {wid}" in caplog.text
        assert store.get(wid) is None
    finally:
        await m.close()


async def test_recycled_pid_is_not_running(strangers: list[subprocess.Popen[bytes]]) -> None:
    driver = ExecDriver()
    me = read_proc_stat(os.getpid())
    assert me is not None
    assert driver.is_running({"pid": os.getpid(), "pgid": os.getpid(), "start_time": me.start_time})
    assert not driver.is_running({"pid": os.getpid(), "pgid": os.getpid(), "start_time": me.start_time + 1})
    assert not driver.is_running({"pid": os.getpid(), "pgid": os.getpid(), "start_time": None})
    # The Driver protocol's async check says the same.
    assert await driver.is_alive({"pid": os.getpid(), "pgid": os.getpid(), "start_time": me.start_time})
    assert not await driver.is_alive({"pid": os.getpid(), "pgid": os.getpid(), "start_time": None})

    # A stranger holding the recorded pid must never be signalled.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # noqa: ASYNC220 - instant
    strangers.append(stranger)
    real = read_proc_stat(stranger.pid)
    assert real is not None
    fake = {"pid": stranger.pid, "pgid": stranger.pid, "start_time": real.start_time - 1}
    assert not driver.is_running(fake)
    await driver.stop(fake, grace=0.1)
    assert await asyncio.wait_for(driver.wait(fake), 1.0) is None
    assert stranger.poll() is None  # still alive


# -- the store on its own -------------------------------------------------------


def test_store_file_schema_and_updates(store: WorkloadStore, data_dir: Path) -> None:
    path = data_dir / "registry.sqlite3"
    for file in (path, data_dir / "registry.sqlite3-wal"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    wid = new_workload_id()
    record = WorkloadRecord(
        id=wid, spec=cmd("true"), state=WorkloadState.PENDING, driver="exec", node=NODE, created_at=1.0, request_id="r1"
    )
    store.insert(record)
    assert store.get(wid) == record
    with pytest.raises(DuplicateWorkload):
        store.insert(dataclasses.replace(record, id=new_workload_id()))  # same request_id
    # Many records may have no request id.
    store.insert(WorkloadRecord(id=new_workload_id(), spec=cmd("true"), state=WorkloadState.EXITED,
                                driver="exec", node=NODE, created_at=2.0))
    store.insert(WorkloadRecord(id=new_workload_id(), spec=cmd("true"), state=WorkloadState.EXITED,
                                driver="exec", node=NODE, created_at=3.0))
    with pytest.raises(ValueError, match="nope"):
        store.update(wid, nope=1)
    with pytest.raises(ValueError):
        store.update(wid, id=new_workload_id())
    updated = store.update(wid, state=WorkloadState.RUNNING, handle={"pid": 1}, started_at=5.0)
    assert updated is not None and updated.state is WorkloadState.RUNNING and updated.handle == {"pid": 1}
    assert store.update(new_workload_id(), error="x") is None
    assert store.count_unfinished() == 1
    assert [r.id for r in store.list(states=[WorkloadState.RUNNING])] == [wid]
    assert len(store.list()) == 3
    assert store.get_by_request_id("r1") == updated
    assert updated.to_dict() == {
        "id": wid, "node": NODE, "state": "running", "spec": record.spec.model_dump(mode="json"),
        "created_at": 1.0, "started_at": 5.0, "finished_at": None, "exit_code": None, "error": None, "owner": None,
    }
    assert store.delete(wid) and not store.delete(wid)
    assert store.get(wid) is None


def test_a_version_1_registry_gains_owners_and_keeps_its_rows(data_dir: Path) -> None:
    # A registry written before workloads had owners (schema 1): opening it migrates, rows stay, owner is None.
    wid = new_workload_id()
    with WorkloadStore(data_dir) as store:
        store.insert(WorkloadRecord(id=wid, spec=cmd("true"), state=WorkloadState.RUNNING, driver="exec", node=NODE,
                                    created_at=1.0, owner="alice"))
    with sqlite3.connect(data_dir / "registry.sqlite3") as conn:
        conn.execute("ALTER TABLE workloads DROP COLUMN owner")
        conn.execute("PRAGMA user_version = 1")
    with WorkloadStore(data_dir) as again:
        record = again.get(wid)
        assert record is not None and record.owner is None and record.state is WorkloadState.RUNNING
        again.update(wid, owner="bob")
        assert again.get(wid).owner == "bob"  # type: ignore[union-attr]


def test_store_survives_reopen_and_refuses_newer_schema(data_dir: Path) -> None:
    wid = new_workload_id()
    with WorkloadStore(data_dir) as first:
        first.insert(
            WorkloadRecord(id=wid, spec=cmd("true"), state=WorkloadState.RUNNING, driver="exec", node=NODE, created_at=1.0)
        )
    with WorkloadStore(data_dir) as again:
        assert again.get(wid) is not None and again.count_unfinished() == 1
    with sqlite3.connect(data_dir / "registry.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HypercoreError, match="newer"):
        WorkloadStore(data_dir)
