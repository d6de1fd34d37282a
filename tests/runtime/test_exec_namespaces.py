"""An exec workload sees only its own processes and has its own /tmp and /dev/shm: real processes, as root.

Before PID namespaces a workload under a uid of its own could still list every
process of the machine and read their command lines (``/proc/*/cmdline`` is
world-readable): the agent's, Serf's, other workloads'. These tests fail on
that code. The data dir lives under /var/tmp, not /tmp, so that the private
/tmp can be tested too (a home under /tmp keeps the shared /tmp; see
hypercore.runtime.namespaces.shared_dirs_to_hide).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hypercore.devcluster import live_workload_processes
from hypercore.runtime import ExecDriver, WorkloadManager
from hypercore.runtime.supervisor import read_state
from hypercore.store import WorkloadRecord, WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState
from tests.waiting import eventually

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root"),
    pytest.mark.tini,  # fails under `make test` when tini is missing, skips otherwise (tests/conftest.py)
]

NODE = "ns-node"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hc-ns-", dir="/var/tmp"))
    root.chmod(0o711)
    data = root / "data"
    data.mkdir(mode=0o700)
    try:
        yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def managed(data_dir: Path, driver: ExecDriver) -> AsyncIterator[WorkloadManager]:
    """A manager of exec workloads under `driver` that ends every workload it started, whatever happens."""
    store = WorkloadStore(data_dir)
    m = WorkloadManager(store, data_dir, {"exec": driver}, NODE)
    try:
        yield m
    finally:
        for record in store.list():
            if record.handle:
                await driver.stop(record.handle, 0)
        await m.close()
        store.close()


@pytest.fixture
async def manager(data_dir: Path) -> AsyncIterator[WorkloadManager]:
    async with managed(data_dir, ExecDriver(adopted_poll_interval=0.05)) as m:
        yield m


async def run(m: WorkloadManager, command: str) -> tuple[WorkloadRecord, str]:
    record = await m.accept(WorkloadSpec(command=command))
    done = await eventually(lambda: (r := m.get(record.id)).state.finished and r, 20, "the workload to end")
    return done, (await m.read_logs(record.id)).decode(errors="replace")


async def test_a_workload_sees_only_its_own_processes(manager: WorkloadManager) -> None:
    # A process of the node with a secret on its command line, and another workload.
    host = subprocess.Popen(["sleep", "61.2345"])
    other = await manager.accept(WorkloadSpec(command="exec sleep 62.3456"))
    try:
        await eventually(lambda: live_workload_processes()[other.id] == 1, 5, "the other workload to run")
        record, out = await run(manager, "for d in /proc/[0-9]*; do echo \"$d $(tr '\\0' ' ' < $d/cmdline)\"; done")
    finally:
        host.kill()
        host.wait()
    assert record.exit_code == 0, out
    seen = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("/proc/"))
    assert seen["/proc/1"].startswith(shutil.which("tini") or "tini"), out  # PID 1 of its own namespace
    assert all(int(d.removeprefix("/proc/")) < 16 for d in seen), out  # a handful of its own, numbered from 1
    for secret in ("61.2345", "62.3456", "pytest", "python"):
        assert secret not in out, out
    state = read_state(manager.logs_path(record.id).parent)
    assert state is not None and state["namespaces"] is True and state["namespaces_unavailable"] is None


async def test_tmp_and_shm_are_its_own(manager: WorkloadManager) -> None:
    marker = Path(tempfile.mkstemp(prefix="hc-host-marker-", dir="/tmp")[1])
    shm_marker = Path(tempfile.mkstemp(prefix="hc-host-marker-", dir="/dev/shm")[1])
    try:
        record, out = await run(manager, f"""
            test -e {marker} && echo SEES-HOST-TMP
            test -e {shm_marker} && echo SEES-HOST-SHM
            echo data > /tmp/hc-from-workload && echo WROTE-TMP
            echo data > /dev/shm/hc-from-workload && echo WROTE-SHM
            ls -ld /proc/self/ns/pid
        """)
        assert record.exit_code == 0, out
        assert "SEES-HOST" not in out and "WROTE-TMP" in out and "WROTE-SHM" in out, out
        assert not Path("/tmp/hc-from-workload").exists() and not Path("/dev/shm/hc-from-workload").exists()
        state = read_state(manager.logs_path(record.id).parent)
        assert state is not None and state["private_dirs"] == ["/tmp", "/dev/shm"]
    finally:
        marker.unlink(missing_ok=True)
        shm_marker.unlink(missing_ok=True)


async def test_a_stop_reaches_the_workload_through_its_init(manager: WorkloadManager) -> None:
    # The shell is not PID 1 (tini is): a SIGTERM handler of the workload runs, and its exit code is kept.
    record = await manager.accept(WorkloadSpec(command="trap 'echo got-term; exit 7' TERM; echo ready; "
                                                        "sleep 60 & wait"))
    log = manager.logs_path(record.id)  # created by the supervisor once the workload runs
    await eventually(lambda: log.exists() and b"ready" in log.read_bytes(), 5, "the trap")
    stopped = await manager.stop(record.id, grace=5.0)
    assert stopped.state is WorkloadState.STOPPED
    assert stopped.exit_code == 7
    assert b"got-term" in await manager.read_logs(record.id)


async def test_what_it_leaves_behind_dies_with_it(manager: WorkloadManager) -> None:
    # A daemonized grandchild (double fork, new session) is still in the namespace: it ends with PID 1.
    record, _ = await run(manager, "setsid sh -c 'sleep 63.4567 &' ; exit 0")
    assert record.state is WorkloadState.EXITED

    await eventually(lambda: live_workload_processes()[record.id] == 0, 5, "the daemonized sleep to end")


async def test_without_an_init_the_state_says_no_namespaces(data_dir: Path) -> None:
    async with managed(data_dir, ExecDriver(init=None, adopted_poll_interval=0.05)) as m:
        record, out = await run(m, "cat /proc/1/cmdline; echo")
        state = read_state(m.logs_path(record.id).parent)
        assert state is not None and state["namespaces"] is False
        assert state["namespaces_unavailable"] == "not asked for (no --init)"
        assert "tini" not in out  # the machine's PID 1, not an init of its own
    assert ExecDriver().init == shutil.which("tini")


async def test_a_stop_before_the_init_handles_signals_still_reaches_the_command(data_dir: Path) -> None:
    # A just-started tini is PID 1 of the namespace before it handles SIGTERM, and the kernel gives a
    # namespace's init only the signals it handles: a stop in that instant was dropped, tini then started
    # the command, and it ran until the SIGKILL after the grace (the flaky test_stop_long_running).
    # This init stays in that state for a while (a shell as PID 1, no trap), then becomes tini.
    init = data_dir.parent / "slow-init"
    init.write_text(f'#!/bin/sh\nsleep 5\nexec {shutil.which("tini")} "$@"\n')
    init.chmod(0o755)
    async with managed(data_dir, ExecDriver(init=str(init), adopted_poll_interval=0.05)) as m:
        record = await m.accept(WorkloadSpec(command="sleep 60"))
        started = time.monotonic()
        stopped = await m.stop(record.id, grace=10.0)
        assert stopped.state is WorkloadState.STOPPED
        assert stopped.exit_code == 128 + 15, (stopped.exit_code, await m.read_logs(record.id))  # 137: SIGKILL
        assert time.monotonic() - started < 5.0  # not the grace's 10 s


async def test_what_a_workload_starts_while_it_ends_is_left_to_finish(manager: WorkloadManager) -> None:
    # The late-command SIGTERM above goes only to new children of the init: a trap's clean-up, started
    # after the SIGTERM, runs to its end within the grace.
    record = await manager.accept(WorkloadSpec(
        command="trap 'sh -c \"sleep 0.6; echo cleaned-up\"; exit 5' TERM; echo ready; sleep 60 & wait"))
    log = manager.logs_path(record.id)
    await eventually(lambda: log.exists() and b"ready" in log.read_bytes(), 5, "the trap")
    stopped = await manager.stop(record.id, grace=5.0)
    assert stopped.exit_code == 5
    assert b"cleaned-up" in await manager.read_logs(record.id)
