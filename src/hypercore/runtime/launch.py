"""Handing a workload to its exec supervisor: one forked from the zygote, else one started for it.

A supervisor's Python and modules take about 18 ms of CPU to load (of a
29 ms start on this machine). Started for the workload (`Piped`: the
workload goes to its stdin), a start waits for that. The driver keeps one
supervisor loaded ahead of need instead, the zygote (``supervisor.py
--zygote``, hypercore.runtime.handoff), which forks a supervisor for each
start (about 1 ms) and stays loaded: a start neither waits for a load nor
pays one afterwards. (Until 2026-11-29 the driver kept two loaded spares and
replaced each one used: the start was as fast, but each replacement's 18 ms
of CPU competed with the next spawns.) The forked supervisor says who it is,
then answers on a socket of its own (`Forked`). When the zygote is not there
(dead, or `--disable-exec-zygote`) or the job does not fit one message, the
start falls back to a supervisor started for it. The zygote holds nothing but
its socket: it exits when the driver closes it (close(), or the agent's
death); the supervisors it forked live on, like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import subprocess
from collections.abc import Awaitable, Callable
from typing import Final

import hypercore.runtime.handoff as handoff
from hypercore.runtime.isolation import same_process

log = logging.getLogger(__name__)

_SETTLE: Final = 5.0  # how long a zygote told to go may take before it is killed
_GONE: Final = {errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN}  # a send to a dead zygote
_WHO_WAIT: Final = 2.0  # how long a cancelled start waits to learn which supervisor to stop


class Forked:
    """A supervisor the zygote forked for one start: the socket it answers on, and its pid and start time
    (/proc's field 22) once it said them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid: int | None = None
        self.start_time: int | None = None
        self._silent = False  # it ended, or timed out, before saying who it is

    async def _message(self, timeout: float) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 1 << 16), timeout)

    async def _who(self, timeout: float = _WHO_WAIT) -> int | None:
        """Its pid (None: it ended, or never forked, without saying it). A start cancelled while waiting for it
        leaves it unread, for the abort to read."""
        if self.pid is None and not self._silent:
            try:
                pid, started = (await self._message(timeout)).split()
                self.pid, self.start_time = int(pid), int(started)
            except (asyncio.TimeoutError, OSError, ValueError):
                self._silent = True
        return self.pid

    async def answer(self, timeout: float) -> bytes:
        """Its one-line answer (b"" when it ended without one)."""
        if await self._who(timeout) is None:
            return b""
        return await self._message(timeout)

    async def signal(self, sig: int) -> None:
        if await self._who() is not None and same_process(self.pid, self.start_time):  # never a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def gone(self, timeout: float) -> bool:
        """Wait until it has ended (not our child: the zygote reaps it); True when it did within `timeout`."""
        if await self._who() is None:
            return True
        try:
            await asyncio.wait_for(until_ended(self.pid, lambda: same_process(self.pid, self.start_time)), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


class Piped:
    """A supervisor started for one start: the workload goes to its stdin, its one-line answer comes back on
    its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, workload: str) -> None:
        self.proc, self._workload = proc, workload

    async def answer(self, timeout: float) -> bytes:
        """Its one-line answer (b"" when it ended without one)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(self._workload.encode())
        await self.proc.stdin.drain()
        self.proc.stdin.close()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        with contextlib.suppress(asyncio.TimeoutError):  # it closes its stdout after answering: our end closes
            await asyncio.wait_for(self.proc.stdout.read(), 1.0)
        return line

    async def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def gone(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)  # also reaps it
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        pass


class Zygote:
    def __init__(self, argv: list[str], env: dict[str, str], *, enabled: bool) -> None:
        """`argv` starts a supervisor as the zygote (``... supervisor.py --zygote``); none when not `enabled`."""
        self._argv, self._env = argv, env
        self._running: tuple[asyncio.subprocess.Process, socket.socket] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._leaving: set[asyncio.Task[None]] = set()  # dead zygotes being reaped
        self._closed = not enabled

    def warm_up(self) -> None:
        """Start the zygote in the background unless it runs or is on its way."""
        if self._closed or self._running is not None or (self._starting is not None and not self._starting.done()):
            return
        self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        ours = theirs = None
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL, cwd="/",
                env=self._env, start_new_session=True)
        except OSError as exc:  # out of descriptors or processes
            if ours is not None:
                ours.close()
            log.warning("could not start the exec zygote; starts load their own supervisor",
                        extra={"error": str(exc)})
            return
        finally:
            if theirs is not None:
                theirs.close()
        ours.setblocking(False)
        if self._closed:
            await _dismiss(proc, ours)
        else:
            self._running = (proc, ours)

    def hand(self, args: list[str], spec: str, lock_fd: int, log_fd: int) -> Forked | None:
        """Give the workload to the zygote (which may still be loading) to fork its supervisor. None when there
        is no zygote or the job does not fit one message: start one for it."""
        message = handoff.job_message(args, spec)
        if message is None or self._running is None:
            self.warm_up()
            return None
        proc, sock = self._running
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            handoff.send(sock, message, lock_fd, log_fd, theirs.fileno())
        except OSError as exc:
            ours.close()
            if exc.errno in _GONE:  # it died (killed by someone): a new one, for the next starts
                self._running = None
                task = asyncio.get_running_loop().create_task(_dismiss(proc, sock))  # reaped off the start's path
                self._leaving.add(task)
                task.add_done_callback(self._leaving.discard)
                self.warm_up()
            return None  # else the message, not the zygote (a small socket buffer): this start loads its own
        finally:
            theirs.close()
        ours.setblocking(False)
        return Forked(ours)

    async def close(self) -> None:
        self._closed = True
        for task in [*([self._starting] if self._starting is not None else []), *self._leaving]:
            with contextlib.suppress(Exception):
                await task
        if self._running is not None:
            running, self._running = self._running, None
            await _dismiss(*running)


async def until_ended(pid: object, running: Callable[[], bool], poll: float = 0.5) -> None:
    """Until `running()` turns false, for process `pid` that is not this process's child: its pidfd wakes us
    at its end, else /proc is polled every `poll` s. `running` (which checks the start time too) is asked
    once the pidfd is open, so that a pid reused meanwhile is never waited for."""
    try:
        fd = os.pidfd_open(int(pid))  # type: ignore[call-overload]
    except (OSError, TypeError, ValueError):
        fd = -1
    loop = asyncio.get_running_loop()
    try:
        while running():
            if fd < 0:
                await asyncio.sleep(poll)
                continue
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)
    finally:
        if fd >= 0:
            os.close(fd)


async def opened_unless_cancelled(opening: Awaitable[int]) -> int:
    """The descriptor `opening` opens (the supervisor lock); if the caller is cancelled meanwhile (a placement
    deadline), it is closed once it is open, instead of staying open, and the lock held, in the agent."""
    task = asyncio.ensure_future(opening)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is not None or os.close(t.result()))
        raise


async def _dismiss(proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
    sock.close()  # the zygote exits when its socket closes
    try:
        await asyncio.wait_for(proc.wait(), _SETTLE)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
