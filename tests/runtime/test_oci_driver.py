"""The container driver against a real engine (Podman here) and a local image.

Every container a test creates is named ``hc-<workload id>`` from ids the
``ids`` fixture hands out, and carries this session's node label; teardown
removes both sets with ``rm -f`` whether the test passed or not.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hypercore.runtime.base import RuntimeRefused
from hypercore.runtime.manager import WorkloadManager
from hypercore.runtime.oci import (
    LABEL_NODE,
    LABEL_WORKLOAD,
    OCIDriver,
    container_name,
    find_engine,
    read_k8s_log,
)
from hypercore.store import WorkloadRecord, WorkloadStore
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.runtime.oci_image import INDEX_HTML, ensure_test_image
from tests.waiting import eventually


# Tests that use the engine carry the `podman` marker (one by one, so the pure
# log-parsing test still runs without Podman); tests/conftest.py checks Podman
# once and skips (or, under HYPERCORE_REQUIRE_REAL=1, fails) them without it.
# "podman" when none is found: then no marked test gets past that check, and
# the name keeps ENGINE a plain str for the helpers below.
ENGINE: str = find_engine() or "podman"

# One node label per session, so the sweep below only ever touches our containers.
NODE = f"hc-test-{uuid.uuid4().hex[:8]}"
# A workload that ends at once on SIGTERM (PID 1 ignores signals it does not trap).
TRAPPED_SLEEP = ["sh", "-c", 'trap "exit 143" TERM; sleep 60 & wait']


def engine(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert ENGINE is not None
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=60, check=check)


def inspect(ref: str) -> dict:
    return json.loads(engine("container", "inspect", ref).stdout)[0]


def exists(ref: str) -> bool:
    return engine("container", "inspect", ref, check=False).returncode == 0


def engine_at_work_on(name: str) -> bool:
    """A process of the engine has container ``name`` on its command line (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if argv[0] == ENGINE.encode() and any(name.encode() in arg for arg in argv[1:]):
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image() -> str:
    assert ENGINE is not None
    return ensure_test_image(ENGINE)


@pytest.fixture
def ids() -> Iterator[Callable[[], str]]:
    """Hands out workload ids; removes their containers (and any labelled for NODE) at teardown."""
    issued: list[str] = []

    def new() -> str:
        wid = new_workload_id()
        issued.append(wid)
        return wid

    try:
        yield new
    finally:
        names = [container_name(w) for w in issued]
        labelled = engine("ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL_NODE}={NODE}", check=False)
        refs = names + labelled.stdout.split()
        if refs:
            engine("rm", "--force", *(["--time", "0"] if "podman" in ENGINE else []), *refs, check=False)


@pytest.fixture
def driver() -> OCIDriver:
    return OCIDriver(ENGINE, node_name=NODE)


def spec(image: str, *args: str, **fields: object) -> WorkloadSpec:
    return WorkloadSpec(image_ref=image, args=list(args) or None, **fields)


# -- probe --------------------------------------------------------------------


@pytest.mark.podman
async def test_probe(driver: OCIDriver, tmp_path: Path) -> None:
    assert await driver.probe() and driver.probe_error is None
    missing = OCIDriver(str(tmp_path / "no-such-engine"), node_name=NODE)
    assert not await missing.probe() and "no executable" in (missing.probe_error or "")
    failing = OCIDriver("/bin/false", node_name=NODE, flavor="podman")
    assert not await failing.probe()
    hanging = tmp_path / "hanging-engine"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    slow = OCIDriver(str(hanging), node_name=NODE, flavor="podman", probe_timeout=0.5)
    t0 = time.monotonic()
    assert not await slow.probe()
    assert time.monotonic() - t0 < 5 and "did not answer" in (slow.probe_error or "")
    detected = await OCIDriver.detect(node_name=NODE)
    assert detected is not None and detected.name == "container"


# -- start, run, refuse -------------------------------------------------------


@pytest.mark.podman
async def test_http_through_published_port(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    port = free_port()
    wid = ids()
    handle = await driver.start(
        wid, spec(image, "httpd", "-f", "-v", "-p", "80", "-h", "/www", ports=[f"{port}:80"]), tmp_path / "output.log"
    )
    assert handle["name"] == container_name(wid) and handle["container_id"]
    assert await driver.is_alive(handle)
    async with httpx.AsyncClient(timeout=2.0) as client:

        async def page() -> bytes | None:
            try:
                return (await client.get(f"http://127.0.0.1:{port}/index.html")).content
            except httpx.TransportError:  # httpd not listening yet
                return None

        body = await eventually(page, 10, "httpd to answer on the published port", interval=0.1)
    assert body == INDEX_HTML
    await driver.stop(handle, grace=0)
    assert not await driver.is_alive(handle)
    assert b"response:200" in await driver.read_logs(handle, tmp_path / "output.log")


@pytest.mark.podman
async def test_env_args_and_logs(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    wid = ids()
    log_path = tmp_path / "w" / "output.log"
    handle = await driver.start(
        wid,
        spec(
            image,
            "sh",
            "-c",
            'echo "FOO=$FOO"; echo "ID=$HYPERCORE_WORKLOAD_ID"; echo to-stderr >&2; echo "$1"; printf no-newline',
            "argv0",
            "$(id); rm -rf / `x`",
            env={"FOO": "bar baz $HOME", "HYPERCORE_WORKLOAD_ID": "forged"},
        ),
        log_path,
    )
    assert await driver.wait(handle) == 0
    out = await driver.read_logs(handle, log_path)
    # stdout and stderr reach the engine through two pipes, so their relative
    # order is not kept; each stream's own order is.
    assert b"to-stderr\n" in out
    assert out.replace(b"to-stderr\n", b"", 1) == (
        f"FOO=bar baz $HOME\nID={wid}\n$(id); rm -rf / `x`\nno-newline".encode()
    ), out
    for n in (1, 10, 14, 40, len(out), len(out) + 100):
        assert await driver.read_logs(handle, log_path, tail_bytes=n) == out[-n:]
    env = inspect(handle["container_id"])["Config"]["Env"]
    assert "FOO=bar baz $HOME" in env and f"HYPERCORE_WORKLOAD_ID={wid}" in env
    assert not any(e.startswith(("HTTP_PROXY=", "http_proxy=")) for e in env)


@pytest.mark.podman
async def test_limits_and_labels_reach_the_engine(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    wid = ids()
    handle = await driver.start(wid, spec(image, "sleep", "30", cpu=0.5, mem=64), tmp_path / "output.log")
    info = inspect(handle["container_id"])
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["Config"]["Labels"][LABEL_WORKLOAD] == wid
    assert info["Config"]["Labels"][LABEL_NODE] == NODE
    # Inside the container too: cgroup v2 memory.max (v1: memory.limit_in_bytes).
    proc = engine("exec", handle["name"], "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                  "cat /sys/fs/cgroup/memory/memory.limit_in_bytes", check=False)
    if proc.returncode == 0 and proc.stdout.strip().isdigit():
        assert int(proc.stdout) == 64 * 1024 * 1024


@pytest.mark.podman
async def test_unknown_image_is_refused_fast(driver: OCIDriver, ids, tmp_path: Path) -> None:
    wid = ids()
    t0 = time.monotonic()
    with pytest.raises(RuntimeRefused) as err:
        await driver.start(wid, spec("localhost/hypercore-no-such-image:404"), tmp_path / "output.log")
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "localhost/hypercore-no-such-image:404" in message
    assert "image not known" in message or "No such image" in message, message
    assert "\n" not in message and not exists(container_name(wid))


@pytest.mark.podman
async def test_port_clash_is_refused_and_cleaned_up(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        wid = ids()
        with pytest.raises(RuntimeRefused, match="address already in use") as err:
            await driver.start(wid, spec(image, "sleep", "30", ports=[f"{port}:80"]), tmp_path / "output.log")
    assert str(port) in str(err.value)
    assert not exists(container_name(wid))  # the created-but-not-started container is gone


@pytest.mark.podman
async def test_stop_is_idempotent_and_keeps_the_container(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    handle = await driver.start(ids(), spec(image, *TRAPPED_SLEEP), tmp_path / "output.log")
    waiter = asyncio.ensure_future(driver.wait(handle))
    t0 = time.monotonic()
    await driver.stop(handle, grace=5)
    assert time.monotonic() - t0 < 4  # it trapped SIGTERM, no SIGKILL needed
    assert await asyncio.wait_for(waiter, 5) == 143
    assert not await driver.is_alive(handle)
    assert inspect(handle["container_id"])["State"]["Status"] == "exited"
    assert await driver.exit_code(handle) == 143
    await driver.stop(handle, grace=1)  # already stopped
    await driver.remove(handle)
    assert not exists(handle["container_id"])
    await driver.stop(handle, grace=1)  # already gone
    await driver.remove(handle)
    assert not await driver.is_alive(handle) and await driver.wait(handle) is None


@pytest.mark.podman
async def test_exit_code(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    handle = await driver.start(ids(), spec(image, "sh", "-c", "exit 7"), tmp_path / "output.log")
    assert await asyncio.wait_for(driver.wait(handle), 10) == 7
    assert await driver.wait(handle) == 7  # again, on the kept container


@pytest.mark.podman
async def test_unrunnable_specs_are_refused(driver: OCIDriver, image: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeRefused, match="exec"):
        await driver.start(new_workload_id(), WorkloadSpec(command="true"), tmp_path / "output.log")
    # A NUL byte cannot even make a spec now (workload.py refuses it); the driver still guards against a
    # spec that skipped validation.
    with pytest.raises(ValueError, match="NUL"):
        spec(image, "echo", "nul\x00byte")
    unchecked = WorkloadSpec.model_construct(image_ref=image, args=["echo", "nul\x00byte"], cpu=1.0, mem=64, ports=[],
                                             env={}, command=None)
    with pytest.raises(RuntimeRefused, match="cannot run this spec"):
        await driver.start(new_workload_id(), unchecked, tmp_path / "output.log")


@pytest.mark.podman
async def test_cancelled_start_leaves_no_container(driver: OCIDriver, image: str, ids, tmp_path: Path) -> None:
    # A placement deadline cancels start(): whatever the engine got to must go.
    wid = ids()
    task = asyncio.ensure_future(driver.start(wid, spec(image, "sleep", "30"), tmp_path / "output.log"))
    # Cancel while the engine is at work on it (its `run` takes a few hundred ms).
    await eventually(lambda: engine_at_work_on(container_name(wid)), 10, "the engine to start creating the container",
                     interval=0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not exists(container_name(wid))


# -- through the manager: adopt, logs -----------------------------------------


@pytest.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "data"


@pytest.mark.podman
async def test_adopt_after_restart(image: str, ids, data_dir: Path) -> None:
    wid = ids()
    store = WorkloadStore(data_dir)
    first = WorkloadManager(store, data_dir, {"container": OCIDriver(ENGINE, node_name=NODE)}, NODE)
    try:
        record = await first.accept(spec(image, *TRAPPED_SLEEP, env={"GREETING": "hi"}), workload_id=wid)
        assert record.state is WorkloadState.RUNNING and record.handle is not None
    finally:
        await first.close()  # like an agent going down: the container keeps running
        store.close()

    store = WorkloadStore(data_dir)
    driver = OCIDriver(ENGINE, node_name=NODE)
    second = WorkloadManager(store, data_dir, {"container": driver}, NODE)
    try:
        [adopted] = await second.adopt()
        assert adopted.id == wid and adopted.state is WorkloadState.RUNNING
        found = await driver.list_by_label()
        assert [(c.workload_id, c.running) for c in found] == [(wid, True)]
        assert found[0].handle["container_id"] == adopted.handle["container_id"]  # type: ignore[index]
        stopped = await second.stop(wid, grace=5)
        assert stopped.state is WorkloadState.STOPPED and stopped.exit_code == 143
        assert not await driver.is_alive(stopped.handle)  # type: ignore[arg-type]
        assert (await second.stop(wid)).state is WorkloadState.STOPPED
        assert [(c.running, c.exit_code) for c in await driver.list_by_label()] == [(False, 143)]
    finally:
        await second.close()
        store.close()


@pytest.mark.podman
async def test_logs_after_exit_restart_and_removal(image: str, ids, data_dir: Path) -> None:
    wid = ids()
    script = 'echo out; echo err >&2; i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done; printf end'
    store = WorkloadStore(data_dir)
    driver = OCIDriver(ENGINE, node_name=NODE)
    manager = WorkloadManager(store, data_dir, {"container": driver}, NODE)
    try:
        await manager.accept(spec(image, "sh", "-c", script), workload_id=wid)

        def ended() -> WorkloadRecord | None:
            record = manager.get(wid)
            return record if record.state.finished else None

        record = await eventually(ended, 10, "the workload to end")
        assert record.state is WorkloadState.EXITED and record.exit_code == 0
        expected = b"out\n" + b"".join(f"line {i}\n".encode() for i in range(300)) + b"end"
        logs = await manager.read_logs(wid)
        assert b"err\n" in logs and logs.replace(b"err\n", b"", 1) == expected  # stderr: own pipe, own order
        expected = logs
        # The tail is the last 12 bytes of what was logged, wherever stderr's line landed.
        assert await manager.read_logs(wid, tail_bytes=12) == logs[-12:]
        assert await manager.read_logs(wid, tail_bytes=0) == b""
    finally:
        await manager.close()
        store.close()

    store = WorkloadStore(data_dir)
    manager = WorkloadManager(store, data_dir, {"container": OCIDriver(ENGINE, node_name=NODE)}, NODE)
    try:
        assert await manager.adopt() == []  # finished already; nothing to adopt
        assert await manager.read_logs(wid) == expected
        await driver.remove(manager.get(wid).handle)  # type: ignore[arg-type]
        assert not exists(container_name(wid))
        assert await manager.read_logs(wid) == expected  # the log lives in the workload dir
    finally:
        await manager.close()
        store.close()


def test_k8s_log_parsing(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    path.write_bytes(
        b"2026-01-01T00:00:00.000000001+00:00 stdout F hello\n"
        b"2026-01-01T00:00:00.000000002+00:00 stderr P part-\n"
        b"2026-01-01T00:00:00.000000003+00:00 stderr F one\n"
        b"2026-01-01T00:00:00.000000004+00:00 stdout F \n"
        b"2026-01-01T00:00:00.000000005+00:00 stdout F with  two spaces \n"
        b"not a cri line\n"
    )
    plain = b"hello\npart-one\n\nwith  two spaces \nnot a cri line\n"
    assert read_k8s_log(path) == plain
    for n in range(len(plain) + 3):
        assert read_k8s_log(path, tail_bytes=n) == (plain[-n:] if n else b"")
    assert read_k8s_log(tmp_path / "missing.log") == b""
