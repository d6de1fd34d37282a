"""A uid of its own for each exec workload, from a range no account uses (:data:`UID_BASE` on).

Its supervisor holds it for the workload's life with an ``flock`` on ``<lock dir>/<uid>``, so no two
live workloads on the machine share one, whatever agent started them. A uid still owning a process is
never handed out again: the lock file names the cgroup its last workload's processes were born in, so
finding out costs one read of that cgroup, not of the machine's process table (which grows with every
process of the machine: 10 ms at 570 processes, docs/scale.md).

Standard library only: the supervisor loads this file without the hypercore package (see
hypercore.runtime.supervisor).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
from pathlib import Path

TYPE_CHECKING = False  # not typing's: the supervisor starts faster without importing typing

if TYPE_CHECKING:  # duck-typed at run time: the supervisor loads these files without the package
    from collections.abc import Callable

    from hypercore.runtime.cgroups import Cgroups

UID_BASE = 2_000_000
UID_COUNT = 65_536
UID_LOCK_DIR = Path("/run/hypercore/uids")
# Accounts' container uids and gids (a workload's gid is its uid): never a workload's.
SUBORDINATE_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


class UidError(Exception):
    """No uid of the range can be handed out."""


def subordinate_ids(files: tuple[Path, ...] = SUBORDINATE_FILES) -> list[range]:
    """The id ranges ``/etc/subuid`` and ``/etc/subgid`` give accounts for their containers
    (``name:first:count`` lines); a line that is not one is skipped."""
    ranges = []
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            parts = [p.strip() for p in line.split(":")]
            if len(parts) == 3 and all(p.isascii() and p.isdecimal() for p in parts[1:]):
                ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges



class UidLease:
    """A uid held for one workload while ``fd`` (an flock'ed file) stays open.

    The file says who holds it (``<workload id> <pid>``) and, once the workload's cgroups exist and before
    any process has the uid, where its processes will be (``cgroup <dir>``, or ``cgroup none``): the next
    allocation of the uid asks that cgroup, not the whole process table, whether any is left."""

    def __init__(self, uid: int, fd: int, holder: str = "") -> None:
        self.uid, self.fd, self.holder = uid, fd, holder

    def record(self, cg: Cgroups) -> None:
        """Name the cgroup every process of the uid will be born in (its first process joins before
        taking the uid, and an unprivileged process cannot leave: the directories are root's)."""
        files = cg.procs_files()
        where = str(files[0].parent) if files else "none"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{self.holder}cgroup {where}\n".encode(), 0)


def _open_lock(path: Path) -> tuple[int, bool]:
    """The uid's lock file, and whether this call created it (no workload had the uid since boot:
    the lock directory is on /run)."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags), False
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # another allocator made it first: not fresh
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
        return os.open(path, flags), False


def _left_in_cgroup(fd: int) -> bool | None:
    """Whether the uid's last workload left a process, from the cgroup its lock file names; None when
    the file names none (no cgroups, an older version, or it died before its cgroups existed)."""
    for line in os.pread(fd, 4096, 0).decode(errors="replace").splitlines():
        if line.startswith("cgroup /") and "/../" not in line:
            try:
                with open(Path(line[7:]) / "cgroup.procs", "rb") as fh:
                    return bool(fh.read(16).strip())
            except FileNotFoundError:
                return False  # removed: a cgroup with a process in it cannot be
            except OSError:
                return None
    return None


def _is_account(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True  # a real user or group: never run a workload as someone
        except KeyError:
            pass
    return False


def allocate_uid(workload_id: str, in_use: Callable[[], set[int]], base: int = UID_BASE, count: int = UID_COUNT,
                 lock_dir: Path = UID_LOCK_DIR, subordinate: tuple[Path, ...] = SUBORDINATE_FILES) -> UidLease:
    """The first uid of [base, base+count) that no account, group, account's containers (subordinate
    uids and gids: a workload's gid is its uid), live workload or leftover process uses.

    A leftover is looked for where the uid's last workload kept its processes (its cgroup, named in the
    lock file): O(1) in the machine's processes. Only a uid whose lock file names no cgroup costs a read
    of every process's uids (once per call). A uid with no lock file yet is taken as unused: the range
    is hypercore's (docs/cluster.md, ``--exec-uid-base``). ``in_use``: every uid a process has now
    (hypercore.runtime.isolation.used_uids)."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    others = subordinate_ids(subordinate)
    scanned: set[int] | None = None
    for uid in range(base, base + count):
        if uid == 0 or any(uid in r for r in others):
            continue
        fd, fresh = _open_lock(lock_dir / str(uid))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live workload's: the common case while many run, so it is checked first
        if _is_account(uid):  # the lookups cost more than the lock (NSS reads /etc/passwd and /etc/group)
            os.close(fd)
            continue
        left = False if fresh else _left_in_cgroup(fd)
        if left is None:
            scanned = in_use() if scanned is None else scanned
            left = uid in scanned
        if left:
            os.close(fd)
            continue
        holder = f"{workload_id} {os.getpid()}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        return UidLease(uid, fd, holder)
    raise UidError(f"no free uid in {base}..{base + count - 1} (every one is in use, belongs to an account, or "
                         "is an account's subordinate id in /etc/subuid or /etc/subgid): choose another range "
                         "with --exec-uid-base")
