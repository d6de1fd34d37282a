"""Low-level care of the serf child process: finding the binary, dying with its parent, and signals.

Kept apart from :class:`~hypercore.membership.agent.SerfAgent` because both
are about the operating system's process rules (fork/exec, reaping), not
about Serf.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Callable
from typing import Final

from hypercore.membership.rpc import SerfError

__all__ = ["NOT_INSTALLED_MESSAGE", "PARENT_DEATH_PREEXEC", "SerfNotInstalled", "find_serf_binary", "signal_child"]


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


# Resolved here, in the parent: loading libraries between fork and exec can
# deadlock on locks held by other threads.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG: Final[int] = 1


def _set_parent_death_signal() -> None:
    """Runs in the child before exec: die together with the supervisor.

    If the Python process is killed outright none of our cleanup runs; without
    this the orphaned agent would keep its ports and stay "alive" in the
    cluster.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def signal_child(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal our child unless asyncio has already reaped it.

    Not Process.send_signal(): it polls (waitpid) first, which races with
    asyncio's child watcher for a process that just died; when the poll wins,
    the watcher finds no child and reports exit status 255 instead of the
    real one. Signalling a zombie is harmless; once returncode is set the pid
    is never touched again (the pid would have to be reused within the instant
    between the watcher's waitpid and returncode being set to misdirect this).
    """
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


# For create_subprocess_exec(preexec_fn=...): None where prctl is unavailable.
PARENT_DEATH_PREEXEC: Final[Callable[[], None] | None] = _set_parent_death_signal if _PRCTL is not None else None


NOT_INSTALLED_MESSAGE: Final[str] = (
    "serf binary not found on PATH; install the Debian package 'serf' (apt-get install serf)"
)


class SerfNotInstalled(SerfError):
    """The ``serf`` executable cannot be found."""

    def __init__(self, message: str = NOT_INSTALLED_MESSAGE) -> None:
        super().__init__(message)


def find_serf_binary(name: str = "serf") -> str:
    """Absolute path of the serf executable, or :class:`SerfNotInstalled`."""
    if os.sep in name:
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return name
        raise SerfNotInstalled(f"serf binary {name!r} does not exist or is not executable")
    path = shutil.which(name)
    if path is None:
        raise SerfNotInstalled()
    return path
