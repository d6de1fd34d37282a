"""Network namespaces and TUN devices, for the geo test-bed (root only).

Namespaces are made and removed with `ip netns` (named, so a crashed run's
leftovers can be found and removed by name); a process is started inside one
with `nsenter --net=...`, which enters the network namespace only: the
agents keep the machine's mounts, so cgroups and /proc work as anywhere else
(`ip netns exec` would remount /sys, hiding /sys/fs/cgroup).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import subprocess
from pathlib import Path

from hypercore.errors import HypercoreError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class NetnsError(HypercoreError):
    """A namespace or device could not be made (not root, no `ip`, a name in use)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    return proc


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add(name: str) -> bool:
    """Make namespace `name` with its loopback up; False if it already exists (someone else's: not touched)."""
    if exists(name):
        return False
    proc = ip("netns", "add", name, check=False)
    if proc.returncode != 0:
        if "exists" in proc.stderr.lower():
            return False
        raise NetnsError(f"ip netns add {name}: {proc.stderr.strip()}")
    ip("-n", name, "link", "set", "lo", "up")
    return True


def pids(name: str) -> list[int]:
    """Processes whose network namespace is `name`."""
    proc = ip("netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete(name: str) -> None:
    if exists(name):
        ip("netns", "delete", name, check=False)


def command(name: str, argv: list[str]) -> list[str]:
    """`argv`, run inside namespace `name` (its pid is argv's: nsenter execs it)."""
    return ["nsenter", f"--net={NETNS_DIR / name}", "--", *argv]


_libc = ctypes.CDLL(None, use_errno=True)


def setns(path: Path | None, own: int) -> None:
    """Move the calling thread into the network namespace at `path` (None: back to `own`, an open ns fd)."""
    fd = os.open(path, os.O_RDONLY) if path is not None else own
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns {path or 'back'}: {os.strerror(err)}")
    finally:
        if path is not None:
            os.close(fd)


def open_tun(ifname: str) -> int:
    """A new TUN device `ifname` in the calling thread's namespace, as a non-blocking fd (raw IP packets).

    The device lives as long as the fd: when the process that holds it ends, it is gone.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise NetnsError(f"TUN device {ifname}: {exc.strerror or exc}") from None
    return fd
