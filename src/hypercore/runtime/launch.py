"""The exec driver's spare supervisors: started ahead of need, each replaced after its use.

A supervisor's Python and modules take about 18 ms to load (of a 29 ms
start on this machine), paid on the start's critical path when the
supervisor is started for the workload. A spare has paid it already: it waits
for its job (hypercore.runtime.handoff) and is replaced once it has answered,
off the path of the start that used it. The driver keeps SPARES of them: with
one, a start right after another found its replacement still loading (as slow
as no spare); with two, each has had two starts' time (bench/start.py). When
none is there the start falls back to a supervisor started for it, as before.
A spare holds nothing but its socket: it exits when the driver closes it
(close(), or the agent's death).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
from collections import deque
from typing import Final

import hypercore.runtime.handoff as handoff

log = logging.getLogger(__name__)

_SETTLE: Final = 5.0  # how long a spare told to go may take before it is killed
SPARES: Final = 2  # kept ready: starts in a row each find one that had two starts' time to load


class Spare:
    def __init__(self, argv: list[str], env: dict[str, str], size: int = SPARES) -> None:
        """`argv` starts a supervisor as a spare (``... supervisor.py --spare``); keeps `size` of them (0: none)."""
        self._argv, self._env, self._size = argv, env, size
        self._ready: deque[tuple[asyncio.subprocess.Process, socket.socket]] = deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = size <= 0

    def refill(self) -> None:
        """Start spares in the background until `size` are there or on their way."""
        while not self._closed and len(self._ready) + len(self._starting) < self._size:
            task = asyncio.get_running_loop().create_task(self._start())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

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
            except OSError:  # it died (killed by someone): the next one
                await _dismiss(proc, sock)
                continue
            return proc, sock
        self.refill()
        return None

    async def close(self) -> None:
        self._closed = True
        for task in list(self._starting):
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


async def _dismiss(proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
    sock.close()  # a spare without a job exits when its socket closes
    try:
        await asyncio.wait_for(proc.wait(), _SETTLE)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
