"""The exec driver's spare supervisor: one started ahead of need, replaced after each use.

A supervisor's Python and modules take about 18 ms to load (of a 29 ms
start on this machine), paid on the start's critical path when the
supervisor is started for the workload. A spare has paid it already: it waits
for its job (hypercore.runtime.handoff) and is replaced once it has answered,
off the path of the start that used it. There is at most one spare per
driver; when none is ready the start falls back to a supervisor started for
it, as before. A spare holds nothing but its socket: it exits when the driver
closes it (close(), or the agent's death).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
from typing import Final

import hypercore.runtime.handoff as handoff

log = logging.getLogger(__name__)

_SETTLE: Final = 5.0  # how long a spare told to go may take before it is killed


class Spare:
    def __init__(self, argv: list[str], env: dict[str, str], enabled: bool = True) -> None:
        """`argv` starts a supervisor as a spare (``... supervisor.py --spare``); not `enabled`: never one."""
        self._argv, self._env = argv, env
        self._ready: tuple[asyncio.subprocess.Process, socket.socket] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = not enabled

    def refill(self) -> None:
        """Start a spare in the background unless one is there or on its way."""
        if self._closed or self._ready is not None or (self._starting is not None and not self._starting.done()):
            return
        self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL, cwd="/",
                env=self._env, start_new_session=True)
        except OSError as exc:
            ours.close()
            log.warning("could not start a spare exec supervisor; starts load their own", extra={"error": str(exc)})
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        if self._closed:
            await _dismiss(proc, ours)
        else:
            self._ready = (proc, ours)

    async def hand(self, args: list[str], spec: str, lock_fd: int, log_fd: int
                   ) -> tuple[asyncio.subprocess.Process, socket.socket] | None:
        """Give the workload to the spare (which may still be loading): its process and socket, to read the answer
        from (answer()). None when there is no spare or the job does not fit one message: start one for it."""
        message = handoff.job_message(args, spec)
        taken, self._ready = self._ready, None
        if message is None or taken is None:
            if taken is not None:
                self._ready = taken
            self.refill()
            return None
        proc, sock = taken
        try:
            handoff.send(sock, message, lock_fd, log_fd)
        except OSError:  # it died (killed by someone): a supervisor of its own, and a new spare after
            await _dismiss(proc, sock)
            self.refill()
            return None
        return proc, sock

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        taken, self._ready = self._ready, None
        if taken is not None:
            await _dismiss(*taken)


async def answer(sock: socket.socket, timeout: float) -> bytes:
    """The supervisor's one-line answer on its socket (b"" when it ended without one); the socket is closed."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), timeout)
    finally:
        sock.close()


async def _dismiss(proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
    sock.close()  # a spare without a job exits when its socket closes
    try:
        await asyncio.wait_for(proc.wait(), _SETTLE)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
