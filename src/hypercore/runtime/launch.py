"""Handing a workload to its exec supervisor: a spare started ahead of need, else one started for it.

A supervisor's Python and modules take about 18 ms to load (of a 29 ms
start on this machine), paid on the start's critical path when the
supervisor is started for the workload (`piped_answer`: the workload goes to
its stdin). A spare has paid it already: it waits for its job
(hypercore.runtime.handoff; `Spare.hand`, `answer`) and is replaced once it
has answered, off the path of the start that used it. The agent's driver
keeps `--exec-spares` of them, 2 by default: with one, a start right after
another found its replacement still loading (as slow as no spare); with two,
each has had two starts' time (bench/start.py). When none is there the start
falls back to a supervisor started for it, as before. A spare holds nothing
but its socket: it exits when the driver closes it (close(), or the agent's
death).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import subprocess
from collections import deque
from collections.abc import Awaitable
from typing import Final

import hypercore.runtime.handoff as handoff

log = logging.getLogger(__name__)

_SETTLE: Final = 5.0  # how long a spare told to go may take before it is killed
_GONE: Final = {errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN}  # a send to a dead spare


class Spare:
    def __init__(self, argv: list[str], env: dict[str, str], size: int) -> None:
        """`argv` starts a supervisor as a spare (``... supervisor.py --spare``); keeps `size` of them (0: none)."""
        self._argv, self._env, self._size = argv, env, size
        self._ready: deque[tuple[asyncio.subprocess.Process, socket.socket]] = deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._leaving: set[asyncio.Task[None]] = set()  # dead spares being reaped
        self._closed = size <= 0

    def refill(self) -> None:
        """Start spares in the background until `size` are there or on their way."""
        while not self._closed and len(self._ready) + len(self._starting) < self._size:
            task = asyncio.get_running_loop().create_task(self._start())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

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
            log.warning("could not start a spare exec supervisor; starts load their own", extra={"error": str(exc)})
            return
        finally:
            if theirs is not None:
                theirs.close()
        ours.setblocking(False)
        if self._closed:
            await _dismiss(proc, ours)
        else:
            self._ready.append((proc, ours))

    async def hand(self, args: list[str], spec: str, lock_fd: int, log_fd: int
                   ) -> tuple[asyncio.subprocess.Process, socket.socket] | None:
        """Give the workload to the spare (which may still be loading): its process and socket, to read the answer
        from (answer()). None when there is no spare or the job does not fit one message: start one for it."""
        message = handoff.job_message(args, spec)
        while message is not None and self._ready:
            proc, sock = self._ready.popleft()  # the oldest: the one most likely loaded
            try:
                handoff.send(sock, message, lock_fd, log_fd)
            except OSError as exc:
                if exc.errno not in _GONE:  # the message, not the spare (a small socket buffer): keep it
                    self._ready.appendleft((proc, sock))
                    return None
                self._dismissing(proc, sock)  # it died (killed by someone): the next one
                continue
            return proc, sock
        self.refill()
        return None

    def _dismissing(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(_dismiss(proc, sock))  # reaped off the start's path
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def close(self) -> None:
        self._closed = True
        for task in [*self._starting, *self._leaving]:
            with contextlib.suppress(Exception):
                await task
        while self._ready:
            await _dismiss(*self._ready.popleft())


async def answer(sock: socket.socket, timeout: float) -> bytes:
    """The supervisor's one-line answer on its socket (b"" when it ended without one); the socket is closed."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), timeout)
    finally:
        sock.close()


async def piped_answer(proc: asyncio.subprocess.Process, workload: str, timeout: float) -> bytes:
    """A supervisor started for the workload: the workload goes to its stdin, its one-line answer comes back on
    its stdout (b"" when it ended without one)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(workload.encode())
    await proc.stdin.drain()
    proc.stdin.close()
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    with contextlib.suppress(asyncio.TimeoutError):  # it closes its stdout after answering: our end closes
        await asyncio.wait_for(proc.stdout.read(), 1.0)
    return line


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
    sock.close()  # a spare without a job exits when its socket closes
    try:
        await asyncio.wait_for(proc.wait(), _SETTLE)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
