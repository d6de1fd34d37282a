"""Exec workloads are kept from the node and from each other: real processes, run as root, nothing mocked.

Each workload runs under its supervisor as a uid of its own, with cgroup (or
rlimit) limits and a capped log. The data dir here lives under a directory
every uid may traverse (a pytest tmp dir under /tmp/pytest-of-root is 0700,
which would make every denial below trivially true): what is tested is that
the files are *reachable* and still not readable.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import hypercore.runtime.isolation as isolation
import hypercore.runtime.uids as uids
from hypercore.runtime import ExecDriver, WorkloadManager
from hypercore.runtime.supervisor import read_state
from hypercore.store import WorkloadRecord, WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs root (setuid, cgroups)")

NODE = "iso-node"
CAP = 4 * 1024 * 1024


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hc-iso-", dir="/tmp"))
    root.chmod(0o711)
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "node.key").write_bytes(b"NODE-PRIVATE-KEY")
    (data / "node.key").chmod(0o600)
    (data / "serf").mkdir(mode=0o700)
    (data / "serf" / "serf-agent.json").write_text('{"rpc_auth": "SERF-RPC-KEY"}')
    (data / "serf" / "serf-agent.json").chmod(0o600)
    (data / "node-name").write_text(NODE)  # 0644 as the agent writes it: the driver makes it private
    (data / "node-name").chmod(0o644)
    try:
        yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def driver() -> ExecDriver:
    return ExecDriver(max_log_bytes=CAP, adopted_poll_interval=0.05)


@pytest.fixture
async def manager(data_dir: Path, driver: ExecDriver) -> AsyncIterator[WorkloadManager]:
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


async def finished(m: WorkloadManager, wid: str, timeout: float = 20.0) -> WorkloadRecord:
    return await eventually(lambda: (r := m.get(wid)).state.finished and r, timeout, f"workload {wid} to end")


async def run(m: WorkloadManager, command: str, **spec: object) -> tuple[WorkloadRecord, str]:
    record = await m.accept(WorkloadSpec(command=command, **spec))  # type: ignore[arg-type]
    done = await finished(m, record.id)
    return done, (await m.read_logs(record.id)).decode(errors="replace")


def state_of(m: WorkloadManager, wid: str) -> dict:
    state = read_state(m.logs_path(wid).parent)
    assert state is not None
    return state


async def test_each_workload_has_an_unprivileged_uid_of_its_own(manager: WorkloadManager) -> None:
    # Both alive at once: a uid is reused only once its workload is gone.
    probe = "id -u; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; sleep 60"
    records = await asyncio.gather(*(manager.accept(WorkloadSpec(command=probe)) for _ in range(2)))

    async def outputs() -> list[str] | None:
        outs = [(await manager.read_logs(r.id)).decode() for r in records]
        return outs if all("NoNewPrivs" in out for out in outs) else None

    seen = []
    for record, out in zip(records, await eventually(outputs, 10, "both workloads to report")):
        lines = out.splitlines()
        uid = int(lines[0])
        assert uid >= uids.UID_BASE and lines[1].split() == [str(uid)]  # its own gid, no other group
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
        assert "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out
        assert "NoNewPrivs:\t1" in out
        state = state_of(manager, record.id)
        assert state["uid"] == uid
        # The uid's lock names where every process of it is: the workload's cgroup (the next allocation
        # of the uid looks for leftovers there, not in the process table).
        holder, where = (uids.UID_LOCK_DIR / str(uid)).read_text().splitlines()
        assert holder.split()[0] == record.id and holder.split()[1] == str(state["supervisor_pid"])
        assert where == f"cgroup {min(state['cgroups'].values())}" if state["cgroups"] else where == "cgroup none"
        seen.append(uid)
    assert seen[0] != seen[1]


async def test_a_workload_cannot_read_the_node_nor_other_workloads(
    manager: WorkloadManager, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SECRET", "agent-env-secret")
    other = await manager.accept(WorkloadSpec(command="echo other-output; sleep 60", env={"TOKEN": "other-secret"}))
    other_pid = other.handle["pid"]  # type: ignore[index]
    await eventually(lambda: b"TOKEN=other-secret" in Path(f"/proc/{other_pid}/environ").read_bytes(), 5,
                     "the other workload to exec its shell")
    other_dir = data_dir / "workloads" / other.id
    script = f"""
        try() {{ if "$@" >/dev/null 2>&1; then echo "ALLOWED: $*"; else echo "DENIED: $*"; fi; }}
        try test -e {data_dir}/node.key
        try cat {data_dir}/node.key
        try cat {data_dir}/serf/serf-agent.json
        try ls {data_dir}/serf
        try cat {data_dir}/node-name
        try cat {data_dir}/registry.sqlite3
        try ls {data_dir}
        try ls {data_dir}/workloads
        try cat /proc/{os.getpid()}/environ
        try cat /proc/{other_pid}/environ
        try kill -0 {other_pid}
        try ls {other_dir}
        try ls {other_dir}/home
        try cat {other_dir}/output.log
        try cat {other_dir}/state.json
        try touch {other_dir}/planted
        try touch $HOME/mine
        try ls $HOME
    """
    record, out = await run(manager, script)
    assert record.exit_code == 0, out
    allowed = {line.split(": ", 1)[1].strip() for line in out.splitlines() if line.startswith("ALLOWED")}
    # The paths are reachable (so the denials are the permissions' doing); only its own home is open.
    assert allowed == {f"test -e {data_dir}/node.key", "touch $HOME/mine".replace("$HOME", str(
        data_dir / "workloads" / record.id / "home")), f"ls {data_dir / 'workloads' / record.id / 'home'}"}, out
    assert "secret" not in out and "NODE-PRIVATE-KEY" not in out and "SERF-RPC-KEY" not in out
    assert not (other_dir / "planted").exists()
    assert (data_dir / "node-name").stat().st_mode & 0o077 == 0  # made private when exec was first used
    assert (data_dir.stat().st_mode & 0o777, (data_dir / "workloads").stat().st_mode & 0o777) == (0o711, 0o711)


async def test_memory_limit_ends_the_workload_and_says_why(manager: WorkloadManager) -> None:
    record, out = await run(manager, 'python3 -c "b = bytearray(256 * 1024 * 1024)"', mem=64)
    state = state_of(manager, record.id)
    assert state["enforcement"]["memory"].startswith("cgroup"), state  # this machine has a writable memory cgroup
    assert record.state is WorkloadState.EXITED
    assert record.exit_code == 128 + signal.SIGKILL
    assert record.error == "killed: out of memory (limit 64 MB)"
    assert state["oom_kills"] >= 1


async def test_every_process_and_thread_of_the_workload_is_in_its_cgroups(manager: WorkloadManager) -> None:
    # The first process joins by moving its only thread (v1 `tasks`: no global lock, no RCU grace period on
    # the way of the start); what it starts afterwards, processes and threads, must be in the same cgroups.
    record = await manager.accept(WorkloadSpec(command="sleep 60 & python3 -c 'import threading, time; "
                                               "threading.Thread(target=time.sleep, args=(60,)).start()'"))
    state = state_of(manager, record.id)
    uid = state["uid"]
    await eventually(lambda: len(isolation.pids_of_uid(uid)) >= 3, 10, "the workload's processes")
    await eventually(lambda: any(len(os.listdir(f"/proc/{p}/task")) == 2 for p in isolation.pids_of_uid(uid)),
                     10, "the workload's thread")
    dirs = {name: Path(d) for name, d in state["cgroups"].items()}
    if set(dirs) != {"memory", "cpu", "pids"}:
        pytest.skip(f"this machine gives workloads cgroups for {sorted(dirs)} only, not memory, cpu and pids")
    tasks = [(p, t) for p in isolation.pids_of_uid(uid) for t in os.listdir(f"/proc/{p}/task")]
    assert len(tasks) >= 4
    for pid, tid in tasks:
        lines = [line.split(":", 2) for line in Path(f"/proc/{pid}/task/{tid}/cgroup").read_text().splitlines()]
        for name, d in dirs.items():
            v2 = state["cgroup_versions"][name] == 2  # "0::<path>" on the unified hierarchy
            where = [path for _, controllers, path in lines if (controllers == "" if v2 else name in controllers.split(","))]
            assert where and d.as_posix().endswith(where[0]), (pid, tid, name, where, d)
    members = {int(p) for d in set(dirs.values()) for p in (d / "cgroup.procs").read_text().split()}
    assert {pid for pid, _ in tasks} <= members
    await manager.stop(record.id, grace=0)


async def test_a_workload_cannot_leave_its_cgroup_to_keep_its_uid_unseen(manager: WorkloadManager) -> None:
    # Attack: the next owner of a uid is checked for leftovers only in the cgroup its last workload was born
    # in (hypercore.runtime.uids). A workload that moved a process out of it (to a parent, the root, or via a
    # cgroup mount of its own) could leave that process behind unseen, to share its uid with a stranger. Every
    # way a process of the uid might write itself elsewhere must fail, and every process of the uid stays in.
    escape = ("for f in /sys/fs/cgroup/*/tasks /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/*/hypercore/tasks "
              "/sys/fs/cgroup/*/hypercore/cgroup.procs /sys/fs/cgroup/tasks /sys/fs/cgroup/cgroup.procs; do "
              "[ -e \"$f\" ] && (echo 0 > \"$f\") 2>/dev/null && echo \"MOVED $f\"; done; "
              "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg 2>/dev/null && echo MOUNTED; "
              "unshare -Urmc sh -c 'mount -t cgroup2 none /tmp 2>/dev/null && echo 0 > /tmp/cgroup.procs "
              "2>/dev/null && echo MOVED-USERNS' 2>/dev/null; (sleep 60 &); echo tried; sleep 60")
    record = await manager.accept(WorkloadSpec(command=escape))
    state = state_of(manager, record.id)
    out = await eventually(lambda: _logs_with(manager, record.id, b"tried"), 10, "the escape attempts")
    assert b"MOVED" not in out and b"MOUNTED" not in out, out
    if not state["cgroups"]:
        pytest.skip("this machine gives workloads no cgroup")
    members = {int(p) for d in set(state["cgroups"].values()) for p in (Path(d) / "cgroup.procs").read_text().split()}
    uid_pids = set(isolation.pids_of_uid(state["uid"]))
    assert len(uid_pids) >= 2 and uid_pids <= members, (uid_pids, members)
    await manager.stop(record.id, grace=0)


async def _logs_with(manager: WorkloadManager, wid: str, needle: bytes) -> bytes | None:
    out = await manager.read_logs(wid)
    return out if needle in out else None


async def test_without_cgroups_rlimits_stand_in(data_dir: Path) -> None:
    driver = ExecDriver(cgroups=False)
    store = WorkloadStore(data_dir)
    m = WorkloadManager(store, data_dir, {"exec": driver}, NODE)
    try:
        record, out = await run(m, 'python3 -c "b = bytearray(256 * 1024 * 1024)"', mem=64)
        assert record.exit_code != 0 and "MemoryError" in out, out
        enforcement = state_of(m, record.id)["enforcement"]
        assert enforcement == {"memory": f"rlimit RLIMIT_AS={64 * 1024 * 1024}",
                               "pids": f"rlimit RLIMIT_NPROC={isolation.PIDS_MAX}", "cpu": "none"}
        assert state_of(m, record.id)["cgroups"] == {}
    finally:
        await m.close()
        store.close()


FORK_BOMB = """python3 -c '
import subprocess, time
started = 0
for _ in range(2000):
    try:
        subprocess.Popen(["sleep", "30"])
        started += 1
    except OSError:
        pass
print("started", started, flush=True)
time.sleep(60)
'"""


async def test_a_fork_bomb_is_capped_and_ended_at_stop(manager: WorkloadManager) -> None:
    record = await manager.accept(WorkloadSpec(command=FORK_BOMB))
    uid = state_of(manager, record.id)["uid"]
    peak = 0

    async def done_forking() -> bool:
        nonlocal peak
        peak = max(peak, len(await asyncio.to_thread(isolation.pids_of_uid, uid)))
        return b"started" in await manager.read_logs(record.id)

    await eventually(done_forking, 30, "the fork loop to give up", interval=0.05)
    peak = max(peak, len(isolation.pids_of_uid(uid)))
    started = int((await manager.read_logs(record.id)).split()[-1])
    assert 100 <= peak <= isolation.PIDS_MAX, peak
    assert started < isolation.PIDS_MAX  # the kernel refused the rest
    cgroups = state_of(manager, record.id)["cgroups"]
    processes = {pid: isolation.start_time(pid) for pid in isolation.pids_of_uid(uid)}
    stopped = await manager.stop(record.id, grace=1.0)
    assert stopped.state is WorkloadState.STOPPED
    # Its very processes are gone (the uid itself may already be another test's workload's), and its cgroups,
    # which cannot be removed while any process is in them, and which none of them could leave.
    assert [pid for pid, started in processes.items() if isolation.same_process(pid, started)] == []
    assert all(not Path(p).exists() for p in cgroups.values())


async def test_output_is_capped_and_the_newest_kept(manager: WorkloadManager) -> None:
    command = "echo THE-START; yes 0123456789abcdef | head -c 500000000; printf 'bad:\\377\\376\\n'; echo THE-END"
    started = time.monotonic()
    record, _ = await run(manager, command)
    elapsed = time.monotonic() - started
    assert record.exit_code == 0
    log = manager.logs_path(record.id)
    files = [p for p in (log.with_name("output.log.1"), log) if p.exists()]
    assert sum(p.stat().st_size for p in files) <= CAP and len(files) == 2
    raw = await manager.read_logs(record.id)
    assert raw.endswith(b"bad:\xff\xfe\nTHE-END\n")  # bytes as written; readers replace them
    assert b"THE-START" not in raw and len(raw) >= CAP // 2
    assert await manager.read_logs(record.id, tail_bytes=8) == b"THE-END\n"
    assert elapsed < 30


async def test_the_supervisor_outlives_the_agent_and_is_adopted(data_dir: Path, driver: ExecDriver) -> None:
    store = WorkloadStore(data_dir)
    a = WorkloadManager(store, data_dir, {"exec": driver}, NODE)
    running = await a.accept(WorkloadSpec(command="echo up; sleep 1.5; exit 7"))
    quick = await a.accept(WorkloadSpec(command="exit 5"))
    await a.close()  # the agent goes away; the supervisors do not
    assert driver.is_running(running.handle)  # type: ignore[arg-type]
    await eventually(lambda: not driver.is_running(quick.handle), 10, "the quick one to end")  # type: ignore[arg-type]

    b_driver = ExecDriver(adopted_poll_interval=0.05)
    b = WorkloadManager(store, data_dir, {"exec": b_driver}, NODE)
    try:
        await b.adopt()
        assert b.get(running.id).state is WorkloadState.RUNNING
        ended_while_down = b.get(quick.id)
        assert (ended_while_down.state, ended_while_down.exit_code, ended_while_down.error) == (
            WorkloadState.EXITED, 5, None)
        done = await finished(b, running.id)
        assert (done.state, done.exit_code) == (WorkloadState.EXITED, 7)
        assert b"up\n" in await b.read_logs(running.id)
    finally:
        await b.close()
        store.close()


async def test_a_killed_supervisor_takes_its_workload_with_it(manager: WorkloadManager) -> None:
    record = await manager.accept(WorkloadSpec(command="sleep 60 & sleep 60"))
    state = state_of(manager, record.id)
    await eventually(lambda: len(isolation.pids_of_uid(state["uid"])) >= 3, 5, "the workload's processes")
    # Its very processes (pid and start time): once they are gone the uid is free, and a workload of a test
    # running beside this one may take it at once (CI saw "processes of the uid" that were that one's).
    processes = {pid: isolation.start_time(pid) for pid in isolation.pids_of_uid(state["uid"])}
    os.kill(record.handle["supervisor_pid"], signal.SIGKILL)  # type: ignore[index]
    done = await finished(manager, record.id)
    assert done.state is WorkloadState.EXITED and "supervisor died" in (done.error or "")
    assert [pid for pid, started in processes.items() if isolation.same_process(pid, started)] == []
    assert all(not Path(p).exists() for p in state["cgroups"].values())


def test_state_file_is_root_only(tmp_path: Path) -> None:
    from hypercore.runtime.supervisor import write_json

    write_json(tmp_path / "state.json", {"a": 1})
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "state.json").read_text()) == {"a": 1}


def test_the_process_table_reads_every_uid_and_skips_zombies() -> None:
    # Every start reads every process's uids (a uid still used by a leftover process is not handed out);
    # it now parses /proc/<pid>/status bytes for two lines instead of every line, 1.8x as fast.
    import subprocess

    uid = uids.UID_BASE + uids.UID_COUNT - 7  # outside what the tests allocate first
    def as_uid() -> None:
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    # The live one names itself like a status line claiming uid 0: the kernel escapes the newline, so the
    # first "\nUid:" of its status is still the real one (what a leftover process might try, to keep its uid
    # busy unseen and share it with the next workload).
    live = subprocess.Popen(["/usr/bin/python3", "-I", "-c", "import ctypes, sys, time; ctypes.CDLL(None).prctl("
                             "15, b'x\\nUid:\\t0\\t0\\t0\\t0', 0, 0, 0); print('named', flush=True); time.sleep(30)"],
                            preexec_fn=as_uid, stdout=subprocess.PIPE)
    dead = subprocess.Popen(["true"], preexec_fn=as_uid)
    try:
        assert live.stdout is not None and live.stdout.readline() == b"named\n"
        assert b"\\nUid:" in Path(f"/proc/{live.pid}/status").read_bytes()
        deadline = time.monotonic() + 5
        while isolation.read_proc_stat(dead.pid).state != "Z" and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        assert isolation.pids_of_uid(uid) == [live.pid]  # the zombie does not count
        assert uid in isolation.used_uids() and 0 in isolation.used_uids()
    finally:
        live.kill()
        live.wait()
        dead.wait()
    assert isolation.pids_of_uid(uid) == []
