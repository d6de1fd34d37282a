"""The ``exec`` driver: a shell command, run by a supervisor of its own, as a uid of its own.

Each workload gets a supervisor process (:mod:`hypercore.runtime.supervisor`)
in a session of its own, so it outlives the agent, like conmon does for a
container. The supervisor runs ``/bin/sh -c COMMAND`` as an unprivileged uid
that no other workload shares, with no capabilities, in cgroups that enforce
``--mem``, ``--cpu`` and a process limit (rlimits where cgroups are not
available), copies its output into a capped ``output.log`` and records
everything in ``<workdir>/state.json``. See docs/cluster.md for what that
does and does not keep a workload from.

The workload's directory ``<data dir>/workloads/<id>/`` is root's (0711): the
log, the state and the supervisor's lock are in it, the workload's own home
and working directory is ``home/`` (0700, its uid). The data dir and
``workloads/`` are made 0711 (traversable, not listable) and everything else
in the data dir private to the agent's user.

Everything the driver needs is found from the workload id alone: the state
file and lock are at fixed places in its directory. So an agent killed while
starting a workload finds it again (:meth:`ExecDriver.locate`), and the
handle (supervisor pid *and* start time, state path, the workload's pid,
group and uid) is only a cache of that. A pid is always checked with its start
time from ``/proc``: a recycled pid is never mistaken for ours.

Handles from before the supervisor (``pid``, ``pgid``, ``start_time`` only)
are still watched and stopped the old way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import hypercore.runtime.cgroups as limits
import hypercore.runtime.isolation as isolation
import hypercore.runtime.supervisor as sv
import hypercore.runtime.uids as uids
from hypercore.runtime.base import Handle, RuntimeRefused
from hypercore.runtime.isolation import ProcStat, read_proc_stat
from hypercore.runtime.logs import read_rotated
from hypercore.runtime.launch import Forked, Piped, Zygote, opened_unless_cancelled, until_ended
from hypercore.workload import WorkloadSpec, is_workload_id

__all__ = ["ExecDriver", "ProcStat", "read_proc_stat"]

log = logging.getLogger(__name__)

_SUPERVISOR: Final = str(Path(sv.__file__).resolve())
_ARGV: Final = (sys.executable, "-I", "-S", "-c", sv.BOOTSTRAP, _SUPERVISOR)
_SAFE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SUPERVISOR_ENV: Final = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8"}
_STOP_POLL: Final = 0.05
# After the grace, how long the supervisor gets to kill and record before the driver does it itself.
_KILL_SETTLE: Final = 5.0
# How long locate() waits for a supervisor that is still starting its workload.
_LOCATE_WAIT: Final = 10.0


def _handle(state: dict[str, Any], workdir: Path) -> Handle:
    return {"supervisor_pid": state.get("supervisor_pid"), "supervisor_start_time": state.get("supervisor_start_time"),
            "state": str(workdir / sv.STATE), "pid": state.get("pid"), "pgid": state.get("pgid"),
            "start_time": state.get("start_time"), "uid": state.get("uid")}


def _request_stop(workdir: Path, grace: float) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(workdir / sv.STOP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.write(fd, repr(max(0.0, grace)).encode())
        os.close(fd)


def _supervised(handle: Handle) -> bool:
    return "supervisor_pid" in handle


def _workdir(handle: Handle) -> Path:
    return Path(str(handle["state"])).parent


class ExecDriver:
    """Runs ``spec.command`` with ``/bin/sh -c`` under a supervisor, as a uid of its own."""

    name: Final = "exec"

    def __init__(
        self,
        *,
        adopted_poll_interval: float = 0.5,
        locale: str = "C.UTF-8",
        uid_base: int = uids.UID_BASE,
        uid_count: int = uids.UID_COUNT,
        uid_lock_dir: Path = uids.UID_LOCK_DIR,
        pids_max: int = isolation.PIDS_MAX,
        max_log_bytes: int = sv.DEFAULT_LOG_BYTES,
        cgroups: bool = True,
        start_timeout: float = 30.0,
        init: str | None = "",
        zygote: bool = False,
    ) -> None:
        self._poll = adopted_poll_interval
        self._locale = locale
        self.uid_base, self.uid_count, self.uid_lock_dir = uid_base, uid_count, Path(uid_lock_dir)
        self.pids_max = pids_max
        self.max_log_bytes = max_log_bytes
        self.cgroups = cgroups
        self.start_timeout = start_timeout
        # PID 1 of the workload's own PID namespace (hypercore.runtime.namespaces); "" finds Debian's tini,
        # None runs without namespaces (tests of that fallback).
        self.init = (shutil.which("tini") or None) if init == "" else init
        self._opened: set[Path] = set()
        # Supervisors this driver started, by pid: only these can be awaited (and must be reaped).
        self._children: dict[int, tuple[asyncio.subprocess.Process, int | None]] = {}
        # A supervisor loaded ahead of need that forks one per start (hypercore.runtime.launch); the agent's
        # driver has one unless --disable-exec-zygote.
        self._zygote = Zygote([*_ARGV, "--zygote"], _SUPERVISOR_ENV, enabled=zygote)

    def warm_up(self) -> None:
        """Start the zygote now (in the running loop), not at the first start."""
        self._zygote.warm_up()

    async def close(self) -> None:
        await self._zygote.close()

    def _env(self, workload_id: str, spec: WorkloadSpec, home: Path) -> dict[str, str]:
        # Start from nothing rather than the agent's environment, which may
        # hold credentials (API tokens, the RPC key) a workload must not see.
        env = {"PATH": _SAFE_PATH, "HOME": str(home), "LANG": self._locale}
        env.update(spec.env)
        env["HYPERCORE_WORKLOAD_ID"] = workload_id  # last: the spec cannot fake it
        return env

    def _options(self, workload_id: str, spec: WorkloadSpec, workdir: Path) -> list[str]:
        """The supervisor's options for this workload, but its lock's descriptor."""
        options = ["--workdir", str(workdir), "--id", workload_id, "--mem-mb", str(spec.mem), "--cpu", repr(spec.cpu),
                   "--pids-max", str(self.pids_max), "--log-bytes", str(self.max_log_bytes),
                   "--uid-base", str(self.uid_base), "--uid-count", str(self.uid_count),
                   "--uid-lock-dir", str(self.uid_lock_dir)]
        if self.init:
            options += ["--init", self.init]
        return options if self.cgroups else [*options, "--no-cgroups"]

    def _prepare(self, workdir: Path) -> int:
        """Directories and modes (see the module docstring); the supervisor lock, taken (blocking)."""
        workdir.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(workdir, 0o711)
        data_dir = workdir.parent.parent
        if data_dir not in self._opened:
            for path in isolation.open_up_data_dir(data_dir):
                log.warning("made %s private to the agent: exec workloads run as other users", path)
            self._opened.add(data_dir)
        fd = os.open(workdir / sv.LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeRefused(f"a supervisor already runs for workload {workdir.name}") from None
        return fd

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> Handle:
        if spec.command is None:
            raise RuntimeRefused(
                "the exec driver runs 'command' workloads; this one asks for an image "
                f"({spec.image_ref}), which needs a node with the 'container' capability"
            )
        workdir = Path(log_path).parent
        lock_fd = await opened_unless_cancelled(asyncio.to_thread(self._prepare, workdir))
        options = self._options(workload_id, spec, workdir)
        payload = json.dumps({"command": spec.command, "env": self._env(workload_id, spec, workdir / sv.HOME)})
        err_fd = -1
        try:
            err_fd = os.open(workdir / sv.SUPERVISOR_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # The lock goes to the supervisor with the zygote's message (or the exec): held from then on.
            started: Forked | Piped = self._zygote.hand(options, payload, lock_fd, err_fd) or Piped(
                await asyncio.create_subprocess_exec(
                    *_ARGV, *options, "--lock-fd", str(lock_fd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=err_fd, cwd=workdir, env=_SUPERVISOR_ENV, start_new_session=True, pass_fds=(lock_fd,)),
                payload)
        except OSError as exc:
            raise RuntimeRefused(f"the exec driver could not start its supervisor: {exc}") from exc
        finally:
            os.close(lock_fd)
            if err_fd >= 0:
                os.close(err_fd)
        try:
            line = await started.answer(self.start_timeout)
        except BaseException as exc:  # cancelled (the placement deadline), timed out, the pipe broke
            await asyncio.shield(self._abort(started, workdir))
            if isinstance(exc, (TimeoutError, OSError)):
                raise RuntimeRefused(f"the exec supervisor did not start the workload: {exc!r}") from exc
            raise
        finally:
            started.close()
        try:
            state = json.loads(line)
        except ValueError:
            state = {"error": f"the supervisor exited without an answer; see {workdir / sv.SUPERVISOR_LOG}"}
        if state.get("status") != "running":
            await started.gone(_KILL_SETTLE)  # it exits after failing: its lock is free for a retry of the id
            raise RuntimeRefused(f"the exec driver could not start the workload: {state.get('error')}")
        if isinstance(started, Piped):  # a forked one is the zygote's child: watched like an adopted one
            self._children[started.proc.pid] = (started.proc, state.get("supervisor_start_time"))
        return _handle(state, workdir)

    async def _abort(self, started: Forked | Piped, workdir: Path) -> None:
        """Stop a supervisor whose answer will not be waited for."""
        _request_stop(workdir, 0.0)
        await started.signal(signal.SIGTERM)
        if not await started.gone(_KILL_SETTLE):
            await started.signal(signal.SIGKILL)
            await started.gone(_KILL_SETTLE)

    # -- finding workloads from their id ------------------------------------------

    async def locate(self, workload_id: str, log_path: Path) -> Handle | None:
        """The workload's handle, from its directory alone (the agent died before storing it).

        Waits while a supervisor still sets the workload up. None when no
        supervisor ever started it (or it failed to).
        """
        workdir = Path(log_path).parent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LOCATE_WAIT
        while True:
            held = isolation.lock_held(workdir / sv.LOCK)  # before the state: a supervisor may just be ending
            state = sv.read_state(workdir) or {}
            status = state.get("status")
            if status == "failed":
                return None  # its supervisor could not start it
            if status in ("running", "ended"):
                return _handle(state, workdir)
            if not held or loop.time() > deadline:
                # Its supervisor died while starting it (what it left is ended by exit_code()), is
                # stuck (watched like any other), or never was (nothing ran: None).
                return _handle(state, workdir) if state.get("supervisor_pid") else None
            await asyncio.sleep(_STOP_POLL)  # a supervisor is still setting the workload up

    async def running(self, workloads_dir: Path) -> dict[str, Handle]:
        """This node's live supervisors by workload id (the manager stops those it has no record of)."""
        found: dict[str, Handle] = {}
        with contextlib.suppress(OSError):
            for entry in Path(workloads_dir).iterdir():
                if is_workload_id(entry.name) and (state := sv.read_state(entry)) is not None:
                    handle = _handle(state, entry)
                    if self.is_running(handle):
                        found[entry.name] = handle
        return found

    # -- watching ------------------------------------------------------------------

    async def is_alive(self, handle: Handle) -> bool:
        """The Driver protocol's check; reading /proc is cheap, so it just calls is_running."""
        return self.is_running(handle)

    def is_running(self, handle: Handle) -> bool:
        """Synchronous: also used from non-async code (hypercore.devcluster's cleanup). The
        supervisor (for an old handle, the process) still lives and has not recorded the end."""
        if _supervised(handle):
            return isolation.same_process(handle.get("supervisor_pid"), handle.get("supervisor_start_time")) and (
                sv.read_state(_workdir(handle)) or {}).get("status") != "ended"
        return isolation.same_process(handle.get("pid"), handle.get("start_time"))

    def _child(self, handle: Handle) -> asyncio.subprocess.Process | None:
        pid = handle.get("supervisor_pid")
        entry = self._children.get(pid) if isinstance(pid, int) else None
        return entry[0] if entry is not None and entry[1] == handle.get("supervisor_start_time") else None

    async def _until_gone(self, handle: Handle, timeout: float | None = None) -> bool:
        """Wait for the handle's process (the supervisor) to end; True when it did within ``timeout``."""
        proc = self._child(handle)
        try:
            if proc is not None:
                await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)  # also reaps it
            else:
                await asyncio.wait_for(self._watch(handle), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _watch(self, handle: Handle) -> None:
        """Until the handle's process, not our child, ends: a pidfd wakes us up, else /proc is polled."""
        pid = handle.get("supervisor_pid") if _supervised(handle) else handle.get("pid")
        await until_ended(pid, lambda: self.is_running(handle), self._poll)

    async def _ended(self, handle: Handle) -> dict[str, Any]:
        """The final state once the supervisor is gone; what it could not clean up, cleaned up here."""
        state = sv.read_state(_workdir(handle)) or {}
        if state.get("status") != "ended":
            uid = state.get("uid") if state.get("dedicated_uid") else None
            cg = limits.cgroups_from(state)
            pgid = handle.get("pgid") if isolation.same_process(handle.get("pid"), handle.get("start_time")) else None
            await asyncio.to_thread(isolation.end_remains, pgid=pgid, uid=uid, cg=cg)
        return state

    async def wait(self, handle: Handle) -> int | None:
        await self._until_gone(handle)
        if not _supervised(handle):
            return None  # an old workload, not our child: its exit status is unknowable
        proc = self._child(handle)
        if proc is not None:
            self._children.pop(proc.pid, None)
        state = await self._ended(handle)
        code = state.get("exit_code")
        return code if state.get("status") == "ended" and isinstance(code, int) else None

    async def exit_code(self, handle: Handle) -> int | None:
        """The ExitCodeKeeper hook: the code the supervisor recorded (None while it runs, or if it died)."""
        if not _supervised(handle) or self.is_running(handle):
            return None
        state = await self._ended(handle)
        code = state.get("exit_code")
        return code if state.get("status") == "ended" and isinstance(code, int) else None

    async def exit_reason(self, handle: Handle) -> str | None:
        """Why the workload ended, when it was not a plain exit (out of memory, a signal)."""
        if not _supervised(handle):
            return None
        state = sv.read_state(_workdir(handle)) or {}
        if state.get("status") != "ended":
            return "its supervisor died; the workload's processes were ended"
        error = state.get("error")
        return error if isinstance(error, str) else None

    # -- stopping ------------------------------------------------------------------

    async def stop(self, handle: Handle, grace: float) -> None:
        if not _supervised(handle):
            return await self._stop_unsupervised(handle, grace)
        if not self.is_running(handle):
            await self._ended(handle)
            return
        workdir = _workdir(handle)
        _request_stop(workdir, grace)  # read by the supervisor on SIGTERM
        if self.is_running(handle):  # checked right before: never signal a recycled pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["supervisor_pid"]), signal.SIGTERM)
        if not await self._until_gone(handle, max(grace, 0.0) + _KILL_SETTLE):
            log.warning("the supervisor of %s did not end the workload; killing it", workdir.name)
            if self.is_running(handle):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(handle["supervisor_pid"]), signal.SIGKILL)
            await self._until_gone(handle, _KILL_SETTLE)
            await self._ended(handle)

    async def _stop_unsupervised(self, handle: Handle, grace: float) -> None:
        """A handle from before supervisors: SIGTERM its group, SIGKILL after ``grace``."""
        if not self.is_running(handle):
            return  # its pgid can no longer be proven ours, so signalling it could hit a stranger
        pgid = int(handle.get("pgid") or handle["pid"])
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = loop.time() + max(grace, 0.0)
        while isolation.group_alive(pgid) and loop.time() < deadline:
            await asyncio.sleep(_STOP_POLL)
        if isolation.group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        await self._until_gone(handle, _KILL_SETTLE)

    # -- logs ----------------------------------------------------------------------

    async def read_logs(self, handle: Handle | None, log_path: Path, tail_bytes: int | None = None) -> bytes:
        """The LogReader hook: ``output.log.1`` then ``output.log`` (the capped, rotated log)."""
        return await asyncio.to_thread(read_rotated, log_path, tail_bytes)
