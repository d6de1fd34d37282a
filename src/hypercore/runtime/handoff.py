"""How a spare exec supervisor gets its workload: one message, its descriptors attached.

The exec driver may start a supervisor before any workload needs it
(``supervisor.py --spare``), so that a start does not wait for Python and the
supervisor's modules to load (about 18 ms of a 29 ms start). The spare waits
on a SOCK_SEQPACKET socket (its stdin and stdout) for one message: its
options and the workload (command, environment) as JSON, with two
descriptors: the supervisor lock the driver took (held from then on, as an
inherited one would be) and the file its own stderr goes to. It answers on
the same socket, as a supervisor started for the workload answers on stdout.

Standard library only: the supervisor loads it without the hypercore package.
"""

from __future__ import annotations

import json
import os
import socket

MAX_JOB = 128 * 1024  # one message; a bigger workload goes to a supervisor started for it


def job_message(args: list[str], spec: str) -> bytes | None:
    """The message for a spare (its options, the workload's JSON), or None when it is over MAX_JOB."""
    data = json.dumps({"args": args, "spec": spec}).encode()
    return data if len(data) <= MAX_JOB else None


def send(sock: socket.socket, message: bytes, lock_fd: int, log_fd: int) -> None:
    """Hand `message` and the two descriptors to the spare at the other end of `sock` (OSError: it is gone)."""
    socket.send_fds(sock, [message], [lock_fd, log_fd])


def receive() -> tuple[list[str], bytes] | None:
    """In the spare: wait for the job on fd 0. Its options (with ``--lock-fd``) and the workload's JSON, with
    stderr now the supervisor's log; None when the driver closed the socket instead (no job: exit)."""
    with socket.socket(fileno=os.dup(0)) as sock:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_JOB, 2)
    if len(fds) != 2 or not data:
        for fd in fds:
            os.close(fd)
        return None
    lock_fd, log_fd = fds
    os.dup2(log_fd, 2)
    os.close(log_fd)
    job = json.loads(data)
    return [*job["args"], "--lock-fd", str(lock_fd)], job["spec"].encode()
