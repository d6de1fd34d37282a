"""A PID and mount namespace of the workload's own: it sees its own processes and nothing of the node's.

Without them an exec workload, even under a uid of its own, could list every
process of the machine and read their command lines (``/proc/*/cmdline`` is
world-readable), and share ``/tmp`` and ``/dev/shm`` with the node and with
other workloads. So, as container runtimes do:

* the supervisor calls :func:`new_pid_namespace` before it forks the
  workload: that child becomes PID 1 of a fresh PID namespace;
* the child, still root, calls :func:`private_mounts` between fork and exec:
  a mount namespace of its own (mounts of the host still propagate in, none
  of its own propagate out), a ``/proc`` that shows only its namespace, and
  a private ``/tmp`` and ``/dev/shm`` (tmpfs, charged to its memory cgroup);
* PID 1 is ``tini`` (Debian's package), not the workload's shell: the kernel
  delivers to PID 1 only the signals it has a handler for, so a shell as
  PID 1 would ignore the supervisor's SIGTERM; tini forwards it to the
  workload and reaps orphans. When PID 1 ends, the kernel kills whatever else
  is left in the namespace, so nothing the workload forked outlives it.

Linux only, root only (the driver falls back to no namespaces otherwise and
the workload's state says so). Python 3.11 has no ``os.unshare``, hence ctypes.
Standard library only: the supervisor loads this file without the package.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_SLAVE = 0x4000, 0x80000

# Mounted fresh in the workload's namespace: (target, filesystem, flags, options).
_PROC = ("/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")
_TMPFS_FLAGS = MS_NOSUID | MS_NODEV
SCRATCH_DIRS = ("/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(OSError):
    """The kernel refused a namespace or a mount (not root, seccomp, a locked-down host)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str, target: str, fstype: str | None, flags: int, options: str = "") -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), options.encode() if options else None), f"mount {fstype or ''} on {target}")


def new_pid_namespace() -> None:
    """This process's next child is PID 1 of a new PID namespace (this process itself stays where it is)."""
    unshare(CLONE_NEWPID)


def shared_dirs_to_hide(home: str) -> list[str]:
    """The shared scratch dirs that get a private tmpfs: ``/tmp`` and ``/dev/shm``, except one that
    holds the workload's own home (a data dir under /tmp, as in tests: hiding it would hide the home)."""
    home = os.path.realpath(home)
    return [d for d in SCRATCH_DIRS if os.path.isdir(d) and not (home + "/").startswith(os.path.realpath(d) + "/")]


def private_mounts(tmp_mb: int, hide: list[str]) -> None:
    """In the forked child, before exec: its own mounts, ``/proc`` of its PID namespace, and a private
    tmpfs on each dir of ``hide`` (capped at ``tmp_mb``: its pages count against the workload's memory
    limit anyway; the cap keeps a workload without a memory cgroup from filling RAM)."""
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_SLAVE)
    target, fstype, flags, options = _PROC
    mount(fstype, target, fstype, flags, options)
    for target in hide:
        mount("tmpfs", target, "tmpfs", _TMPFS_FLAGS, f"size={max(1, tmp_mb)}m,mode=1777")
