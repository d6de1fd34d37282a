"""QEMU for the vm driver: its command line, the accelerator probe and a minimal QMP client.

Machine: ``-M microvm`` (virtio-mmio devices only, no PCI, no firmware: the
smallest machine QEMU has) with the kernel and initramfs given directly.
Accelerator: KVM only when a real guest boots under it (``probe_accel``):
``/dev/kvm`` can exist and still be unusable (here it is ``kvm-pvm``, under
which stock guest kernels crash), so its presence proves nothing; otherwise
TCG, software emulation, which is slow for CPU-bound work but always works.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from hypercore.runtime.vm_assets import READY_MARKER, GuestAssets

__all__ = ["QEMU", "Accel", "QmpError", "find_qemu", "hostfwd", "probe_accel", "qemu_argv", "qmp"]

QEMU: Final = "qemu-system-x86_64"
Accel = Literal["kvm", "tcg"]
# loglevel=3: the guest kernel's errors and worse only, so the console is the workload's output.
# reboot=t: the guest's init ends with `reboot -f`, a triple fault with -no-reboot makes QEMU exit; with the
# default reboot methods 1 of 6 guests here hung in "reboot: machine restart".
_CMDLINE: Final = "console=ttyS0 loglevel=3 reboot=t panic=-1 pci=off edd=off tsc_early_khz={tsc}"


class QmpError(Exception):
    """The QMP socket did not answer as expected."""


def find_qemu(path: str | None = None) -> str | None:
    return shutil.which(path or QEMU)


def hostfwd(ports: Sequence[str], host_ip: str) -> list[str]:
    """``hostfwd=`` rules for a spec's HOST:GUEST[/proto] ports, bound to ``host_ip``."""
    rules = []
    for item in ports:
        mapping, _, proto = item.partition("/")
        host, guest = mapping.split(":")
        rules.append(f"hostfwd={proto or 'tcp'}:{host_ip}:{host}-:{guest}")
    return rules


def qemu_argv(qemu: str, assets: GuestAssets, initrd: Path, disk: Path | None, *, accel: Accel, cpu: float,
              mem_mb: int, tsc_khz: int, ports: Sequence[str] = (), host_ip: str = "127.0.0.1") -> list[str]:
    """The whole QEMU command line of one VM (run with its working directory as cwd)."""
    argv = [qemu, "-M", "microvm", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(mem_mb), "-smp", str(max(1, math.ceil(cpu))),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(assets.kernel), "-initrd", str(initrd), "-append", _CMDLINE.format(tsc=tsc_khz),
            "-qmp", "unix:qmp.sock,server=on,wait=off"]
    if disk is not None:
        # snapshot=on: the cached disk is shared by every VM of the image; writes go to a private overlay.
        argv += ["-drive", f"id=root,file={disk},format=raw,if=none,snapshot=on",
                 "-device", "virtio-blk-device,drive=root"]
        argv += ["-netdev", ",".join(["user", "id=net0", *hostfwd(ports, host_ip)]),
                 "-device", "virtio-net-device,netdev=net0"]
    return argv


def _die_with_parent() -> None:
    """In the child: SIGKILL when the agent dies, so a probe VM never outlives an agent killed mid-probe."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG


async def probe_accel(qemu: str, assets: GuestAssets, accel: Accel, tsc_khz: int, timeout: float) -> str | None:
    """None when a guest boots to its init under ``accel`` within ``timeout`` s, else why not."""
    with tempfile.TemporaryDirectory(prefix="hc-vm-probe-") as tmp:
        argv = qemu_argv(qemu, assets, assets.initramfs, None, accel=accel, cpu=1, mem_mb=128, tsc_khz=tsc_khz)
        argv = [a for a in argv if not a.startswith("unix:")]
        argv.remove("-qmp")
        proc = await asyncio.create_subprocess_exec(*argv, cwd=tmp, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    preexec_fn=_die_with_parent)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            out = b"timed out"
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    if READY_MARKER.encode() in out:
        return None
    return " ".join(out.decode(errors="replace").split())[-300:] or f"QEMU exited with status {proc.returncode}"


async def qmp(workdir: Path, command: str, timeout: float = 3.0) -> dict[str, Any]:
    """Run one QMP ``command`` on the VM in ``workdir``; its answer.

    The socket is reached as /proc/self/fd/N/qmp.sock (N: the directory, opened
    O_PATH), because a workload directory's full path can exceed the 108 bytes
    a Unix socket address holds.
    """
    dir_fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{dir_fd}/qmp.sock")
            try:
                await reader.readline()  # the greeting
                answer: dict[str, Any] = {}
                for name in ("qmp_capabilities", command):
                    writer.write(json.dumps({"execute": name}).encode() + b"\n")
                    while True:  # skip asynchronous events until the command's answer
                        answer = json.loads(await reader.readline() or b"{}")
                        if "return" in answer or "error" in answer or not answer:
                            break
                    if "error" in answer or not answer:
                        raise QmpError(f"QMP {name}: {answer.get('error') or 'no answer'}")
                return answer
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, ValueError, TimeoutError) as exc:
        raise QmpError(f"QMP {command}: {exc}") from None
    finally:
        os.close(dir_fd)
