"""The ``exec`` driver: a shell command run as its own process group.

Each workload is ``/bin/sh -c COMMAND`` in a new session, so that the workload
and everything it forks share one process group that can be signalled as a
whole. The handle records the leader's pid *and* its start time from
``/proc/<pid>/stat``: after an agent restart a pid alone could name an
unrelated process that got the recycled number, and signalling that would be a
serious bug. The start time makes the handle name one process, once.

Limits worth knowing: ``cpu``, ``mem`` and ``ports`` are not enforced by this
driver (no cgroups, no network namespace); the command runs as the agent's
user with a minimal environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hypercore.runtime.base import Handle, RuntimeRefused
from hypercore.workload import WorkloadSpec

__all__ = ["ExecDriver", "ProcStat", "read_proc_stat"]

_SHELL: Final = "/bin/sh"
_SAFE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How often stop() re-checks whether the group is gone; short, because a
# well-behaved workload exits within milliseconds of SIGTERM.
_STOP_POLL: Final = 0.05
# After SIGKILL the kernel needs a moment to tear processes down; bounded so a
# stuck (D-state) process cannot hang the agent.
_KILL_SETTLE: Final = 5.0
# Grace given to processes a workload left behind when its leader exited.
_LEFTOVER_GRACE: Final = 1.0


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The few fields of ``/proc/<pid>/stat`` the driver needs."""

    state: str  # R, S, D, Z, X, ...
    pgrp: int
    start_time: int  # clock ticks since boot (field 22)

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
        return ProcStat(state=rest[0].decode(), pgrp=int(rest[2]), start_time=int(rest[19]))
    except (IndexError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # kill(0) also succeeds for zombies (ours not yet reaped, or orphans whose
    # new parent does not reap), so look closer before waiting on them.
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_proc_stat(int(entry.name))
            if stat is not None and stat.pgrp == pgid and stat.alive:
                return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> int:
    # Python reports death by signal N as -N; use the shell's 128+N so the
    # codes users see match what sh, docker and systemd print.
    return 128 - returncode if returncode < 0 else returncode


class ExecDriver:
    """Runs ``spec.command`` with ``/bin/sh -c`` in the workload's directory."""

    name: Final = "exec"

    def __init__(self, *, adopted_poll_interval: float = 0.5, locale: str = "C.UTF-8") -> None:
        self._poll = adopted_poll_interval
        self._locale = locale
        # Processes this driver started, by pid. Only these can be awaited for
        # an exit code; anything else (adopted after a restart) is polled.
        self._children: dict[int, tuple[asyncio.subprocess.Process, int | None]] = {}

    def _env(self, workload_id: str, spec: WorkloadSpec, workdir: Path) -> dict[str, str]:
        # Start from nothing rather than the agent's environment, which may
        # hold credentials (API tokens, the RPC key) a workload must not see.
        env = {"PATH": _SAFE_PATH, "HOME": str(workdir), "LANG": self._locale}
        env.update(spec.env)
        env["HYPERCORE_WORKLOAD_ID"] = workload_id  # last: the spec cannot fake it
        return env

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> Handle:
        if spec.command is None:
            raise RuntimeRefused(
                "the exec driver runs 'command' workloads; this one asks for an image "
                f"({spec.image_ref}), which needs a node with the 'container' capability"
            )
        workdir = Path(log_path).parent
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                _SHELL,
                "-c",
                spec.command,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=self._env(workload_id, spec, workdir),
                start_new_session=True,  # own session ⇒ own process group, pgid == pid
                close_fds=True,
            )
        except ValueError as exc:  # e.g. a NUL byte in the command or an env value
            raise RuntimeRefused(f"the exec driver cannot run this spec: {exc}") from exc
        except OSError as exc:
            raise RuntimeRefused(f"the exec driver could not start {_SHELL}: {exc}") from exc
        finally:
            os.close(log_fd)  # the child has its own copy
        # Read right away: the child cannot have been reaped by anyone but
        # asyncio's watcher, and if it already has, it also already ended.
        stat = read_proc_stat(proc.pid)
        start_time = stat.start_time if stat is not None else None
        self._children[proc.pid] = (proc, start_time)
        return {"pid": proc.pid, "pgid": proc.pid, "start_time": start_time}

    async def is_alive(self, handle: Handle) -> bool:
        """The Driver protocol's check; reading /proc is cheap, so it just calls is_running."""
        return self.is_running(handle)

    def is_running(self, handle: Handle) -> bool:
        """Synchronous: also used from non-async code (hypercore.devcluster's
        cleanup) and by this driver's own polling loops. It only reads /proc."""
        start_time = handle.get("start_time")
        if start_time is None:
            return False  # never verified, so never safe to treat as ours
        stat = read_proc_stat(int(handle["pid"]))
        return stat is not None and stat.alive and stat.start_time == start_time

    def _child(self, handle: Handle) -> asyncio.subprocess.Process | None:
        entry = self._children.get(int(handle["pid"]))
        if entry is None or entry[1] != handle.get("start_time"):
            return None
        return entry[0]

    async def wait(self, handle: Handle) -> int | None:
        proc = self._child(handle)
        if proc is not None:
            returncode = await proc.wait()
            # The workload ended with its leader. Whatever it left running in
            # its group (`cmd &`) goes too, so a finished workload stops using
            # the node. Safe only for our own child: its group id cannot have
            # been recycled in the microseconds since it was reaped.
            pgid = int(handle.get("pgid") or proc.pid)
            if _group_alive(pgid):
                await self._end_group(pgid, _LEFTOVER_GRACE)
            self._children.pop(proc.pid, None)
            return _exit_code(returncode)
        # Not our child (the agent restarted): the kernel will not tell us its
        # exit status, so watch it until it is gone and report "unknown".
        while self.is_running(handle):
            await asyncio.sleep(self._poll)
        return None

    @staticmethod
    async def _end_group(pgid: int, grace: float) -> None:
        """SIGTERM the group, give it ``grace`` seconds, then SIGKILL what is left."""
        loop = asyncio.get_running_loop()
        _signal_group(pgid, signal.SIGTERM)
        deadline = loop.time() + max(grace, 0.0)
        while _group_alive(pgid) and loop.time() < deadline:
            await asyncio.sleep(_STOP_POLL)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)

    async def stop(self, handle: Handle, grace: float) -> None:
        pgid = int(handle.get("pgid") or handle["pid"])
        proc = self._child(handle)
        leader_alive = proc.returncode is None if proc is not None else self.is_running(handle)
        if not leader_alive and proc is None:
            # An adopted workload whose leader is gone: its pgid can no longer
            # be proven ours, so signalling it could hit a stranger.
            return
        loop = asyncio.get_running_loop()
        if leader_alive or _group_alive(pgid):
            await self._end_group(pgid, grace)
        # Always reap, so no zombie is left behind and the pid is truly free.
        if proc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), _KILL_SETTLE)
        else:
            settle = loop.time() + _KILL_SETTLE
            while self.is_running(handle) and loop.time() < settle:
                await asyncio.sleep(_STOP_POLL)
