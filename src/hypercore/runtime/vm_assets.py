"""The guest kernel and the base initramfs of the ``vm`` driver, made from Debian packages.

Nothing is downloaded from anywhere but the node's own apt sources: the kernel
is Debian's ``linux-image-cloud-amd64`` (its versioned dependency, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x``, never installed into
/boot), and the initramfs is built here, in Python, from Debian's static
busybox and the handful of kernel modules the guest needs. Both are cached
under the cache directory (default ``<data dir>/vm``), keyed by kernel version
and by a hash of what went into the initramfs, and prepared under a file lock
so that agents sharing a cache do the work once.

Why modules: the cloud kernel has virtio-mmio, virtio-blk and virtio-net as
modules (and no 9p), so the initramfs loads them, in dependency order, before
it can see the root disk and the network; ``evdev`` and ``button`` let the
guest's init see the ACPI power button that a graceful stop presses.

The per-workload part (what to run, with which environment) is a second cpio
archive appended to the base one (:func:`workload_initrd`): the kernel unpacks
concatenated archives in order, so the base stays shared and cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["BUSYBOX", "EXIT_MARKER", "KERNEL_PACKAGE", "MODULES", "READY_MARKER", "AssetError", "GuestAssets",
           "cpio", "host_tsc_khz", "prepare_assets", "workload_initrd"]

KERNEL_PACKAGE: Final = "linux-image-cloud-amd64"
BUSYBOX: Final = Path("/bin/busybox")
# Loaded in this order: each needs the ones before it.
MODULES: Final = ("virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
                  "evdev", "button")
# The guest's init prints these on the console: the exit code of the workload's
# command (last line before power-off), and, without a workload, that it booted.
EXIT_MARKER: Final = "hypercore-exit-code="
READY_MARKER: Final = "hypercore-guest-ready"
_APT_TIMEOUT: Final = 600.0

# PID 1 of every guest. Kept short and POSIX (busybox ash); "$HC_*" values come
# from /hypercore/run.sh, written by workload_initrd with shlex.quote.
INIT: Final = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net evdev button; do
  insmod /lib/modules/$m.ko 2>/dev/null
done
finish() { echo "hypercore-exit-code=$1"; sync; reboot -f; }
if [ ! -f /hypercore/run.sh ]; then echo hypercore-guest-ready; reboot -f; fi
. /hypercore/run.sh
n=0; while [ ! -b /dev/vda ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
mount -t ext4 /dev/vda /newroot || { echo "hypercore: cannot mount the root disk" >&2; finish 125; }
for d in proc sys dev tmp etc; do mkdir -p /newroot/$d; done
mount -t proc proc /newroot/proc; mount -t sysfs sysfs /newroot/sys; mount -o bind /dev /newroot/dev
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
  echo "nameserver 10.0.2.3" > /newroot/etc/resolv.conf
fi
hostname "$HC_HOSTNAME"
hc_run &
child=$!
# The ACPI power button (QMP system_powerdown) asks the workload to end: SIGTERM.
for e in /dev/input/event*; do [ -e "$e" ] && { head -c 1 "$e" >/dev/null; kill -TERM $child; } & done
wait $child
finish $?
"""


class AssetError(Exception):
    """The kernel or initramfs could not be prepared; the message says what to install or fix."""


@dataclass(frozen=True)
class GuestAssets:
    kernel: Path  # vmlinuz
    initramfs: Path  # the base cpio archive (busybox, modules, init)
    version: str  # the kernel's, e.g. 6.1.0-56-cloud-amd64


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The host's TSC frequency in kHz, for the guest's ``tsc_early_khz=``.

    microvm has no timer hardware to calibrate against: without the value 4 of
    10 boots hung here. On hosts whose TSC is constant (``constant_tsc``, as on
    every x86 server of the last decade) "cpu MHz" is that frequency.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":", 1)[1]) * 1000)
    raise AssetError(f"cannot read the host's TSC frequency from {cpuinfo} ('cpu MHz'): the vm runtime needs it")


# -- cpio (newc), enough for an initramfs ---------------------------------------------

def _entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad_name = b"\0" * (-(len(header) + len(encoded)) % 4)
    return header + encoded + pad_name + data + b"\0" * (-len(data) % 4)


def cpio(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, contents) entries, directories (mode 0o040xxx) and
    symlinks (0o120xxx, contents the target) included, with its trailer."""
    out = [_entry(name, mode, data, ino) for ino, (name, mode, data) in enumerate(entries, start=1)]
    out.append(_entry("TRAILER!!!", 0))
    return b"".join(out)


_DIR, _FILE, _EXE = 0o040755, 0o100644, 0o100755


def _base_cpio(busybox: bytes, modules: Mapping[str, bytes]) -> bytes:
    entries = [(d, _DIR, b"") for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules", "hypercore")]
    entries += [("bin/busybox", _EXE, busybox), ("bin/sh", 0o120777, b"busybox"), ("init", _EXE, INIT.encode())]
    entries += [(f"lib/modules/{name}.ko", _FILE, data) for name, data in modules.items()]
    return cpio(entries)


def workload_initrd(base: Path, dest: Path, argv: Sequence[str], env: Mapping[str, str], hostname: str) -> None:
    """Write ``dest``: the base initramfs plus a cpio holding /hypercore/run.sh, which defines
    ``hc_run`` (the command, run chrooted in the root disk with exactly ``env``)."""
    if not argv:
        raise ValueError("the image has no command to run (no Entrypoint or Cmd, and no args given)")
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    command = " ".join(shlex.quote(a) for a in argv)
    script = (f"HC_HOSTNAME={shlex.quote(hostname)}\n"
              f"hc_run() {{ env -i {assigns} /bin/chroot /newroot {command}; }}\n")
    extra = cpio([("hypercore/run.sh", _FILE, script.encode())])
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as out, open(base, "rb") as src:
        shutil.copyfileobj(src, out)
        out.write(extra)
    os.replace(tmp, dest)


# -- preparing the cache ----------------------------------------------------------------

def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=_APT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"{argv[0]} failed: {exc}") from None
    if proc.returncode != 0:
        raise AssetError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout


def _kernel_package() -> str:
    """The versioned package the metapackage depends on, e.g. linux-image-6.1.0-56-cloud-amd64."""
    out = _run(["apt-cache", "depends", KERNEL_PACKAGE])
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise AssetError(f"apt knows no kernel package behind {KERNEL_PACKAGE} (run `apt-get update`?)")


def _fetch_kernel(kernels: Path) -> Path:
    """Download and unpack the cloud kernel into ``kernels/<version>/``; its directory."""
    package = _kernel_package()
    version = package.removeprefix("linux-image-")
    final = kernels / version
    if (final / "vmlinuz").exists():
        return final
    with tempfile.TemporaryDirectory(dir=kernels, prefix=".fetch-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's _apt user writes the download here when it can
        _run(["apt-get", "download", "-q", package], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise AssetError(f"apt-get download {package} left no .deb behind")
        _run(["dpkg-deb", "-x", str(debs[0]), str(work / "x")])
        staged = work / version
        (staged / "modules").mkdir(parents=True)
        shutil.copy2(work / "x" / "boot" / f"vmlinuz-{version}", staged / "vmlinuz")
        found = {p.name.removesuffix(".ko"): p for p in (work / "x" / "lib" / "modules" / version).rglob("*.ko")}
        missing = [m for m in MODULES if m not in found]
        if missing:
            raise AssetError(f"{package} lacks the modules {', '.join(missing)}")
        for name in MODULES:
            shutil.copy2(found[name], staged / "modules" / f"{name}.ko")
        os.replace(staged, final)
    return final


def prepare_assets(cache_dir: Path, busybox: Path = BUSYBOX) -> GuestAssets:
    """The kernel and base initramfs, fetched and built once into ``cache_dir`` (blocking: run it in a thread).

    A kernel already in the cache is used as it is (the newest version there),
    so a node that has one never needs apt again.
    """
    kernels = cache_dir / "kernel"
    kernels.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = sorted(p.parent for p in kernels.glob("*/vmlinuz"))
        kdir = cached[-1] if cached else _fetch_kernel(kernels)
        try:
            box = busybox.read_bytes()
        except OSError as exc:
            raise AssetError(f"cannot read {busybox} ({exc}): apt-get install busybox-static") from None
        modules = {m: (kdir / "modules" / f"{m}.ko").read_bytes() for m in MODULES}
        digest = hashlib.sha256(box + INIT.encode() + b"".join(modules.values())).hexdigest()[:16]
        initramfs = cache_dir / f"initramfs-{kdir.name}-{digest}.cpio"
        if not initramfs.exists():
            tmp = initramfs.with_name(initramfs.name + ".tmp")
            tmp.write_bytes(_base_cpio(box, modules))
            os.replace(tmp, initramfs)
    return GuestAssets(kernel=kdir / "vmlinuz", initramfs=initramfs, version=kdir.name)
