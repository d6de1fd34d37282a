"""The vm driver with real QEMU (TCG here: this machine's /dev/kvm cannot boot stock guests), a real
Debian cloud kernel fetched with apt, and the busybox test image's filesystem as the root disk."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore.runtime.base import RuntimeRefused
from hypercore.runtime.vm import VMDriver, kill_vms
from hypercore.runtime.vm_monitor import STATE
from hypercore.workload import WorkloadSpec
from tests.runtime.oci_image import ensure_test_image

pytestmark = pytest.mark.qemu
ENGINE = shutil.which("podman") or "podman"


@pytest.fixture(scope="module")
def vm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vm-cache")


@pytest.fixture
def workloads(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "workloads"
    path.mkdir()
    try:
        yield path
    finally:
        kill_vms(path)  # a failed test leaves no QEMU behind


def run(workloads: Path, driver: VMDriver, spec: WorkloadSpec) -> tuple[int | None, bytes, str | None]:
    """Boot ``spec``, wait for its end: (exit code, console log, why it ended)."""
    wid = str(uuid.uuid4())
    (workloads / wid).mkdir()
    log = workloads / wid / "output.log"

    async def go() -> tuple[int | None, bytes, str | None]:
        handle = await driver.start(wid, spec, log)
        code = await asyncio.wait_for(driver.wait(handle), 120)
        assert not await driver.is_alive(handle)
        return code, await driver.read_logs(handle, log), await driver.exit_reason(handle)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def driver(vm_cache: Path) -> VMDriver:
    return asyncio.run(VMDriver.detect(vm_cache, kvm_timeout=5.0, max_log_bytes=64 * 1024))


def test_the_guest_command_exit_code_env_and_output_are_recorded(driver: VMDriver, workloads: Path) -> None:
    image = ensure_test_image(ENGINE)
    spec = WorkloadSpec(image_ref=image, runtime="vm", mem=96, env={"GREETING": "hello from the guest"},
                        args=["sh", "-c", 'echo "$GREETING"; echo "id=$HYPERCORE_WORKLOAD_ID"; exit 7'])
    code, log, reason = run(workloads, driver, spec)
    assert code == 7 and reason is None, (code, reason, log)
    assert b"hello from the guest" in log and b"id=" in log
    assert driver.accel in ("kvm", "tcg") and ("vm-kvm" in driver.capabilities) == (driver.accel == "kvm")
    assert len(list((driver.cache_dir / "disks").glob("*.ext4"))) == 1  # built once per image


def test_the_console_log_stays_under_the_cap(driver: VMDriver, workloads: Path) -> None:
    spec = WorkloadSpec(image_ref=ensure_test_image(ENGINE), runtime="vm", mem=96,
                        args=["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; "
                                          "i=$((i+1)); done"])
    code, log, _ = run(workloads, driver, spec)
    assert code == 0
    assert b"line-2999-" in log and b"line-0-" not in log  # the newest output is kept, the oldest dropped
    assert sum(p.stat().st_size for p in workloads.rglob("output.log*")) <= 64 * 1024


def test_an_image_not_on_the_node_or_a_command_is_refused_with_the_reason(driver: VMDriver, tmp_path: Path) -> None:
    wid = str(uuid.uuid4())
    (tmp_path / wid).mkdir()
    with pytest.raises(RuntimeRefused, match="localhost/no-such-image:1 is not on this node.*does not pull"):
        asyncio.run(driver.start(wid, WorkloadSpec(image_ref="localhost/no-such-image:1", runtime="vm"),
                                 tmp_path / wid / "output.log"))
    with pytest.raises(RuntimeRefused, match="'exec' capability"):
        asyncio.run(driver.start(wid, WorkloadSpec(command="true"), tmp_path / wid / "output.log"))
    assert not (tmp_path / wid / STATE).exists()


def test_a_taken_host_port_is_a_refusal_not_a_running_workload(driver: VMDriver, workloads: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        wid = str(uuid.uuid4())
        (workloads / wid).mkdir()
        spec = WorkloadSpec(image_ref=ensure_test_image(ENGINE), runtime="vm", mem=96, ports=[f"{port}:80"],
                            args=["sleep", "60"])
        with pytest.raises(RuntimeRefused, match="host forwarding"):
            asyncio.run(driver.start(wid, spec, workloads / wid / "output.log"))
    assert kill_vms(workloads) == 0
