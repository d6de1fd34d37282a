"""The ``vm`` driver: an OCI image booted as its own small virtual machine (QEMU microvm).

For work that must not share a kernel with its host. A spec with
``image_ref`` and ``runtime: "vm"`` becomes one QEMU process: the image's
filesystem is its root disk (:mod:`~hypercore.runtime.vm_disk`, cached per
image), Debian's cloud kernel and our busybox initramfs boot it
(:mod:`~hypercore.runtime.vm_assets`), the guest's init runs the image's
Entrypoint/Cmd (or the spec's args) with the image's and the spec's
environment, ``cpu``/``mem`` become ``-smp``/``-m``, ports are user-mode
networking ``hostfwd`` rules on ``publish_ip``.

QEMU runs under a monitor process (:mod:`~hypercore.runtime.vm_monitor`) in a
session of its own, so it outlives the agent: the monitor copies the serial
console into the workload's log under the node's cap and records the exit
code the guest's init prints before power-off in ``DIR/vm.json``. Both hold
``DIR/vm.lock``; a restarted agent finds a VM alive by that lock and an ended
one's exit code in ``vm.json``. Stop is QMP ``system_powerdown`` (the guest's
init sends SIGTERM to the command, prints its exit code and powers off), then
SIGKILL of QEMU after the grace. The handle is ``{"workdir", "monitor_pid",
"monitor_start_time", "qemu_pid", "qemu_start_time", "accel"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Final

import hypercore.runtime.isolation as isolation
import hypercore.runtime.supervisor as sv
import hypercore.runtime.vm_monitor as monitor
from hypercore.runtime.base import Handle, RuntimeRefused
from hypercore.runtime.logs import read_rotated
from hypercore.runtime.oci_engine import find_engine
from hypercore.runtime.vm_assets import AssetError, GuestAssets, host_tsc_khz, prepare_assets, workload_initrd
from hypercore.runtime.vm_disk import root_disk
from hypercore.runtime.vm_qemu import Accel, QmpError, find_qemu, probe_accel, qemu_argv, qmp
from hypercore.workload import WorkloadSpec, is_workload_id

__all__ = ["VMDriver"]

log = logging.getLogger(__name__)

_MONITOR: Final = str(Path(monitor.__file__).resolve())
_BOOTSTRAP: Final = sv.BOOTSTRAP.replace("'hypercore_supervisor'", "'hypercore_vm_monitor'")
_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_POLL: Final = 0.1
_KILL_SETTLE: Final = 5.0
_START_TIMEOUT: Final = 30.0


def _state(workdir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((workdir / monitor.STATE).read_bytes())
        if isinstance(data, dict) and data.get("kind") == "vm":
            return data
    return {}


def _handle(state: dict[str, Any], workdir: Path) -> Handle:
    keys = ("monitor_pid", "monitor_start_time", "qemu_pid", "qemu_start_time")
    return {"workdir": str(workdir), **{k: state.get(k) for k in keys}}


def _alive(handle: Handle) -> bool:
    return isolation.lock_held(Path(handle["workdir"]) / monitor.LOCK)


class VMDriver:
    """Runs ``image_ref`` workloads with ``runtime: vm`` as QEMU microVMs."""

    name: Final = "vm"

    def __init__(self, cache_dir: Path, assets: GuestAssets, *, accel: Accel, qemu: str, engine: str,
                 tsc_khz: int, max_log_bytes: int = sv.DEFAULT_LOG_BYTES, publish_ip: str = "") -> None:
        self.cache_dir, self.assets, self.accel, self.qemu, self.engine = cache_dir, assets, accel, qemu, engine
        self.tsc_khz, self.max_log_bytes, self.publish_ip = tsc_khz, max_log_bytes, publish_ip
        # Monitors this driver started, by pid: only these can be awaited (and must be reaped).
        self._children: dict[int, asyncio.subprocess.Process] = {}

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the node offers besides ``vm``: ``vm-kvm`` only when guests run hardware-accelerated."""
        return ("vm-kvm",) if self.accel == "kvm" else ()

    @classmethod
    async def detect(cls, cache_dir: Path, *, qemu: str | None = None, engine: str | None = None,
                     kvm_timeout: float = 10.0, **options: Any) -> VMDriver:
        """A driver once QEMU, the container engine, the kernel and the initramfs are there and a
        guest boots; raises AssetError saying what is missing. KVM is used only if a guest boots under it."""
        found = find_qemu(qemu)
        if found is None:
            raise AssetError(f"{qemu or 'qemu-system-x86_64'} not found: apt-get install --no-install-recommends "
                             "qemu-system-x86 (`make system-deps` does it)")
        podman = find_engine(engine)
        if podman is None:
            raise AssetError("the vm runtime builds root disks from images with podman, which is not installed")
        assets = await asyncio.to_thread(prepare_assets, cache_dir)
        tsc = host_tsc_khz()
        accel: Accel = "tcg"
        why = "no /dev/kvm"
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            why = await probe_accel(found, assets, "kvm", tsc, kvm_timeout) or ""
            accel = "tcg" if why else "kvm"
        if accel == "tcg":
            log.warning("KVM cannot boot a guest here (%s): VMs run under TCG, software emulation, "
                        "CPU-bound work ~18x slower", why)
            if (why := await probe_accel(found, assets, "tcg", tsc, 4 * kvm_timeout)) is not None:
                raise AssetError(f"a test guest did not boot under TCG: {why}")
        return cls(cache_dir, assets, accel=accel, qemu=found, engine=podman, tsc_khz=tsc, **options)

    # -- start -----------------------------------------------------------------------

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> Handle:
        if spec.image_ref is None:
            raise RuntimeRefused("the vm driver boots 'image_ref' workloads; this one is a shell command, "
                                 "which needs a node with the 'exec' capability")
        disk, image = await root_disk(self.engine, spec.image_ref, self.cache_dir)
        env = {"PATH": _DEFAULT_PATH, **image.env, **spec.env, "HYPERCORE_WORKLOAD_ID": workload_id}
        workdir = Path(log_path).parent
        try:
            await asyncio.to_thread(workload_initrd, self.assets.initramfs, workdir / "initrd.img",
                                    image.argv(spec.args), env, f"hc-{workload_id[:8]}")
        except ValueError as exc:
            raise RuntimeRefused(f"image {spec.image_ref}: {exc}") from None
        argv = qemu_argv(self.qemu, self.assets, workdir / "initrd.img", disk, accel=self.accel, cpu=spec.cpu,
                         mem_mb=spec.mem, tsc_khz=self.tsc_khz, ports=spec.ports, host_ip=self.publish_ip)
        lock_fd = os.open(workdir / monitor.LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeRefused(f"a VM already runs for workload {workload_id}") from None
            with open(workdir / "monitor.err", "ab") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", "-c", _BOOTSTRAP, _MONITOR, "--workdir", str(workdir),
                    "--id", workload_id, "--lock-fd", str(lock_fd), "--log-bytes", str(self.max_log_bytes),
                    "--", *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
                    pass_fds=(lock_fd,), start_new_session=True)
        finally:
            os.close(lock_fd)  # the monitor and QEMU hold it from here on
        assert proc.stdout is not None
        self._children[proc.pid] = proc
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT)
            state = json.loads(line or b"{}")
            if state.get("status") != "running":
                raise RuntimeRefused(state.get("error") or "the VM monitor did not start")
            handle = {**_handle(state, workdir), "accel": self.accel}
            await self._until_serving(handle)
        except BaseException:
            await asyncio.shield(self._abort(proc, workdir))
            raise
        return handle

    async def _until_serving(self, handle: Handle) -> None:
        """Return once QEMU answers QMP (its setup, port forwards included, is done); refuse if it ended."""
        workdir = Path(handle["workdir"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        while True:
            with contextlib.suppress(QmpError):
                await qmp(workdir, "query-status", timeout=2.0)
                return
            if not isolation.same_process(handle["qemu_pid"], handle["qemu_start_time"]) or loop.time() > deadline:
                why = " ".join(((workdir / monitor.QEMU_LOG).read_text(errors="replace")).split())[-400:]
                raise RuntimeRefused(f"QEMU did not start the VM: {why or 'no message'}")
            await asyncio.sleep(_POLL)

    async def _abort(self, proc: asyncio.subprocess.Process, workdir: Path) -> None:
        handle = _handle(_state(workdir), workdir)
        with contextlib.suppress(ProcessLookupError):
            if isolation.same_process(handle["qemu_pid"], handle["qemu_start_time"]):
                os.kill(handle["qemu_pid"], signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), _KILL_SETTLE)
        self._children.pop(proc.pid, None)

    # -- watching --------------------------------------------------------------------

    async def is_alive(self, handle: Handle) -> bool:
        return _alive(handle)

    async def wait(self, handle: Handle) -> int | None:
        child = self._children.get(handle.get("monitor_pid") or -1)
        if child is not None:
            await child.wait()
            self._children.pop(child.pid, None)
        while _alive(handle):  # an adopted VM (not our child), or QEMU outliving its monitor
            await asyncio.sleep(0.5)
        return await self.exit_code(handle)

    async def exit_code(self, handle: Handle) -> int | None:
        state = _state(Path(handle["workdir"]))
        code = state.get("exit_code") if state.get("status") == "exited" else None
        return code if isinstance(code, int) else None

    async def exit_reason(self, handle: Handle) -> str | None:
        state = _state(Path(handle["workdir"]))
        if state.get("status") == "exited":
            return state.get("error")
        return None if _alive(handle) else "the VM's monitor died before recording its end"

    async def stop(self, handle: Handle, grace: float) -> None:
        """QMP power-down (the guest's init sends SIGTERM to the command), SIGKILL of QEMU after ``grace``."""
        if not _alive(handle):
            return
        with contextlib.suppress(QmpError):
            await qmp(Path(handle["workdir"]), "system_powerdown")
        if await self._until_gone(handle, grace):
            return
        with contextlib.suppress(ProcessLookupError):
            if isolation.same_process(handle.get("qemu_pid"), handle.get("qemu_start_time")):
                os.kill(handle["qemu_pid"], signal.SIGKILL)
        await self._until_gone(handle, _KILL_SETTLE)

    async def _until_gone(self, handle: Handle, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _alive(handle):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    # -- finding VMs from their id -----------------------------------------------------

    async def locate(self, workload_id: str, log_path: Path) -> Handle | None:
        """The VM's handle from its directory (the agent died before storing it); None if none started."""
        workdir = Path(log_path).parent
        state = _state(workdir)
        return {**_handle(state, workdir), "accel": self.accel} if state.get("monitor_pid") else None

    async def running(self, workloads_dir: Path) -> dict[str, Handle]:
        """This node's live VMs by workload id (the manager stops those it has no record of)."""
        found: dict[str, Handle] = {}
        with contextlib.suppress(OSError):
            for entry in Path(workloads_dir).iterdir():
                if is_workload_id(entry.name) and (state := _state(entry)) and _alive(_handle(state, entry)):
                    found[entry.name] = _handle(state, entry)
        return found

    async def read_logs(self, handle: Handle | None, log_path: Path, tail_bytes: int | None = None) -> bytes:
        """The LogReader hook: ``output.log.1`` then ``output.log`` (the capped, rotated console)."""
        return await asyncio.to_thread(read_rotated, log_path, tail_bytes)


def kill_vms(workloads_dir: Path) -> int:
    """SIGKILL the QEMU of every VM whose directory is in ``workloads_dir``; how many (test and dev clean-up)."""
    killed = 0
    with contextlib.suppress(OSError):
        for entry in Path(workloads_dir).iterdir():
            state = _state(entry)
            if isolation.same_process(state.get("qemu_pid"), state.get("qemu_start_time")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state["qemu_pid"], signal.SIGKILL)
                    killed += 1
    return killed
