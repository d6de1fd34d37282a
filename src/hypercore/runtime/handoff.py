"""How a supervisor forked from the exec zygote gets its workload: one message, its descriptors attached.

Loading Python and the supervisor's modules takes about 18 ms of CPU (of a
29 ms start on this machine). The exec driver keeps one supervisor process
loaded ahead of need (``supervisor.py --zygote``) that forks a supervisor
for each workload instead: about 1 ms, and nothing to load again afterwards.
The zygote waits on a SOCK_SEQPACKET socket (its stdin and stdout) for jobs:
the supervisor's options and the workload (command, environment) as JSON,
with three descriptors: the supervisor lock the driver took (held from then
on, as an inherited one would be), the file the supervisor's stderr goes to,
and a socket of its own to answer on. The forked supervisor first says who
it is (``<pid> <start time>``, so the driver can stop it before it answers),
then answers there as one started for the workload answers on its stdout.

Standard library only: the supervisor loads it without the hypercore package.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket

MAX_JOB = 128 * 1024  # one message; a bigger workload goes to a supervisor started for it


def job_message(args: list[str], spec: str) -> bytes | None:
    """The message for the zygote (its options, the workload's JSON), or None when it is over MAX_JOB."""
    data = json.dumps({"args": args, "spec": spec}).encode()
    return data if len(data) <= MAX_JOB else None


def send(sock: socket.socket, message: bytes, lock_fd: int, log_fd: int, answer_fd: int) -> None:
    """Hand `message` and the three descriptors to the zygote at the other end of `sock` (OSError: it is gone)."""
    socket.send_fds(sock, [message], [lock_fd, log_fd, answer_fd])


def _reap(_sig: int, _frame: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _name(comm: str) -> None:
    with open("/proc/self/comm", "w") as fh:
        fh.write(comm)


def _own_start_time() -> bytes:
    """Field 22 of /proc/self/stat: with the pid, names this very process (a pid alone may be reused)."""
    with open("/proc/self/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()[19]


def serve() -> tuple[list[str], bytes] | None:
    """The zygote's loop: fork for each job on fd 0 and reap what it forked. Returns only in a forked child:
    its options (with ``--lock-fd``) and the workload's JSON, stdin and stdout its answer socket and stderr
    the supervisor's log; or None in the zygote once the driver closed the socket (exit then)."""
    signal.signal(signal.SIGCHLD, _reap)
    _name("hc-zygote")
    # Every object loaded so far is shared with the forked supervisors until one of them writes to its page: a
    # collection there would visit (write) them all, 10 ms of copied pages per supervisor. Frozen, it never does.
    gc.freeze()
    with socket.socket(fileno=os.dup(0)) as sock:
        while True:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_JOB, 3)
            if not data and not fds:
                return None
            if len(fds) != 3 or not data:
                for fd in fds:
                    os.close(fd)
                continue
            try:
                pid = os.fork()
            except OSError:  # out of processes: the driver reads no answer and refuses this start
                pid = -1
            if pid == 0:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                _name("hc-supervisor")  # its command line stays the zygote's; `ps -o comm`, `top` tell them apart
                lock_fd, log_fd, answer_fd = fds
                for target, fd in ((0, answer_fd), (1, answer_fd), (2, log_fd)):
                    os.dup2(fd, target)  # fd 0 and 1 were the zygote's socket: this process keeps none of it
                os.close(answer_fd)
                os.close(log_fd)
                try:
                    os.write(1, b"%d %s" % (os.getpid(), _own_start_time()))
                except OSError:  # the driver gave the start up before it began: nothing was done, nothing to undo
                    os._exit(0)
                job = json.loads(data)
                return [*job["args"], "--lock-fd", str(lock_fd)], job["spec"].encode()
            for fd in fds:
                os.close(fd)
