"""Keeping a workload away from the node and from other workloads: its uid, its privileges, its end.

* **A uid of its own** (hypercore.runtime.uids): one no account, account's
  containers, live workload or leftover process uses.
* **No privileges.** :func:`drop_privileges` runs in the forked child before
  ``exec``: join the cgroups (hypercore.runtime.cgroups), set rlimits, empty
  the capability bounding set, ``setgroups([])``, set gid and uid,
  ``PR_SET_NO_NEW_PRIVS`` and a parent-death SIGKILL.
* **Ending everything.** :func:`kill_all` signals the workload's process
  group and its cgroup members (without cgroups: every process of its
  dedicated uid), so nothing it forked or daemonized escapes.
* **The data dir.** :func:`open_up_data_dir`: traversable, not listable.

Standard library only: the supervisor loads this file without the hypercore
package (see hypercore.runtime.supervisor).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import signal
import time
from collections import namedtuple
from pathlib import Path

TYPE_CHECKING = False  # not typing's: the supervisor starts faster without importing typing

if TYPE_CHECKING:  # duck-typed at run time: the supervisor loads both files without the package
    from collections.abc import Callable, Iterator

    from hypercore.runtime.cgroups import Cgroups

PIDS_MAX = 256
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38


class IsolationError(Exception):
    """The workload cannot be given what it needs (no free uid, a failed privilege drop...)."""


# -- processes ------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot); None if there is no live process."""
    stat = read_proc_stat(pid)
    return stat.start_time if stat is not None and stat.alive else None


def same_process(pid: object, started: object) -> bool:
    """True while ``pid`` is alive and is the very process that started at ``started``."""
    return isinstance(pid, int) and isinstance(started, int) and pid > 0 and start_time(pid) == started


def _process_uids() -> Iterator[tuple[int, tuple[int, ...], bool]]:
    """(pid, its real, effective and saved uid, alive) of every process, from ``/proc/<pid>/status``.

    Every start and stop of a workload reads this for every process of the machine, so it reads bytes
    and looks for two lines only: 5.0 ms per call with 365 processes, where a Path, a decode and a dict of
    every line took 9.2 ms (docs/scale.md: the process count is part of what slows a start).
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            status = os.read(fd, 4096)  # Uid: is in the first kilobyte
        except OSError:
            continue
        finally:
            os.close(fd)
        at = status.find(b"\nUid:")
        state = status.find(b"\nState:")
        if at < 0:
            continue
        try:
            uids = tuple(int(u) for u in status[at + 5:status.index(b"\n", at + 1)].split()[:3])
        except ValueError:
            continue
        alive = state < 0 or status[state + 7:state + 16].strip()[:1] not in (b"Z", b"X")
        yield int(entry), uids, alive


def pids_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes whose real, effective or saved uid is ``uid``."""
    return [pid for pid, uids, alive in _process_uids() if alive and uid in uids]


def has_args(*args: str) -> bool:
    """True while a live process has ``args`` in a row in its command line (e.g. an engine's ``--name X``)."""
    want = b"\0" + b"\0".join(a.encode() for a in args) + b"\0"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if want in b"\0" + Path(f"/proc/{entry}/cmdline").read_bytes() and start_time(int(entry)):
                    return True
    return False


def used_uids() -> set[int]:
    """Every real, effective and saved uid of a process now (a leftover process keeps its uid busy)."""
    return {u for _pid, uids, _alive in _process_uids() for u in uids}


class ProcStat(namedtuple("ProcStat", "state pgrp start_time ppid")):
    """The few fields of ``/proc/<pid>/stat`` the driver needs: state (R, S, D, Z...), process
    group, start time (clock ticks since boot, field 22), parent."""

    __slots__ = ()

    @property
    def alive(self) -> bool:
        # A zombie has ended; it only waits for its parent to reap it.
        return self.state not in ("Z", "X", "x")


def read_proc_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None if there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) is in parentheses and may itself contain ')' or spaces,
    # so split after the *last* ')'. What follows starts at field 3.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcStat(rest[0].decode(), int(rest[2]), int(rest[19]), int(rest[1]))
    except (IndexError, ValueError):
        return None


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_proc_stat(int(entry.name))
            if stat is not None and stat.pgrp == pgid and stat.alive:
                return True
    return False


def lock_held(path: Path) -> bool:
    """True while a supervisor holds the flock on ``path`` (it is alive)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)



# -- privileges ------------------------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def become_subreaper() -> None:
    """Orphans of the workload get reparented to this process (so it reaps them and sees them end)."""
    with contextlib.suppress(OSError):
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def drop_privileges(uid: int | None, cg: Cgroups, rlimits: list[tuple[int, int]], parent: int) -> Callable[[], None]:
    """The ``preexec_fn`` that turns the forked child into the workload (runs between fork and exec).

    Order matters: cgroups and the bounding set need root, so they come
    before the uid change; no-new-privs and the parent-death signal after it
    (a credential change clears the latter).
    """
    procs = cg.join_files()
    try:
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last_cap = 40

    def child() -> None:
        for path in procs:
            with open(path, "w") as fh:
                fh.write("0")  # this thread, the only one (its own pid would be 1 in a PID namespace of its own)
        for which, value in rlimits:
            resource.setrlimit(which, (value, value))
        if uid is not None:
            for cap in range(last_cap + 1):
                with contextlib.suppress(OSError):
                    _prctl(_PR_CAPBSET_DROP, cap)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() not in (parent, 0):  # 0: the parent is outside this process's PID namespace
            os._exit(137)  # the supervisor died before the death signal was armed

    return child


# -- ending ---------------------------------------------------------------------


def workload_pids(*, uid: int | None, cg: Cgroups) -> set[int]:
    """The processes of a workload: its cgroup's members, or without cgroups its (dedicated) uid's.

    With cgroups every process of the uid was born in them and cannot leave (the directories are
    root's), so the process table (O(processes on the machine)) is read only without them."""
    pids = cg.pids()
    if uid is not None and not cg.dirs:
        pids.update(pids_of_uid(uid))
    return pids


def kill_all(sig: int, *, pgid: int | None, uid: int | None, cg: Cgroups) -> set[int]:
    """Send ``sig`` to the workload's group, cgroup members and (dedicated) uid; the pids that got it.

    The members are read before the group is signalled: a process the signal itself makes the workload
    start (a trap's clean-up, on the other core at once) is not among them, and is left to finish.
    """
    members = workload_pids(uid=uid, cg=cg)
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    sent: set[int] = set()
    for pid in members:
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent.add(pid)
    return sent


def term_new_children(parent: int, termed: set[int], *, uid: int | None, cg: Cgroups) -> None:
    """SIGTERM each child of ``parent`` (a workload's namespace init) among the workload's processes that
    is not in ``termed`` (which got the stop's SIGTERM), and add it there.

    The kernel gives a namespace's init only the signals it handles: a stop in the instant before tini
    handles SIGTERM was dropped, tini then started the command, and it ran until the SIGKILL after the
    grace. Only the init's new children: what the workload itself starts while it ends (a trap's
    clean-up) is its own business, and nothing gets a second SIGTERM.
    """
    for pid in workload_pids(uid=uid, cg=cg) - termed:
        stat = read_proc_stat(pid)
        if stat is not None and stat.ppid == parent:
            termed.add(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)


def anything_left(*, uid: int | None, cg: Cgroups) -> bool:
    return bool(workload_pids(uid=uid, cg=cg)) or cg.exiting()


def end_remains(*, pgid: int | None, uid: int | None, cg: Cgroups, grace: float = 1.0) -> None:
    """SIGTERM what is left of a workload, SIGKILL after ``grace``, then remove its cgroups (blocking)."""
    if anything_left(uid=uid, cg=cg):
        kill_all(signal.SIGTERM, pgid=pgid, uid=uid, cg=cg)
        deadline = time.monotonic() + grace
        while anything_left(uid=uid, cg=cg) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(50):  # a fork bomb may need a few rounds
            if not kill_all(signal.SIGKILL, pgid=pgid, uid=uid, cg=cg):
                break
            time.sleep(0.02)
    cg.remove()


# -- the data dir ------------------------------------------------------------------


def open_up_data_dir(data_dir: Path) -> list[Path]:
    """Data dir and workloads/ 0711 (workloads traverse to their home); what else was open, made private."""
    if not data_dir.is_dir() or data_dir.stat().st_uid != os.geteuid():
        return []
    changed = []
    for entry in data_dir.iterdir():
        mode = entry.lstat().st_mode
        if entry.name != "workloads" and not entry.is_symlink() and mode & 0o077:
            os.chmod(entry, mode & 0o7700)
            changed.append(entry)
    for d in (data_dir, data_dir / "workloads"):
        os.chmod(d, 0o711)
    return changed
