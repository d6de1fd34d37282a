"""What a runtime driver is, and the errors the runtime layer raises.

A driver turns a :class:`~hypercore.workload.WorkloadSpec` into something
running on this machine and back. It names the capability it provides
(``exec``, ``container``), which is what a node advertises and what a spec
asks for. Everything a driver needs to find its workload again, even after the
agent restarted, goes into the *handle*: a JSON-serialisable dict that the
manager stores in the registry and hands back on every later call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hypercore.errors import HypercoreError
from hypercore.workload import WorkloadSpec

__all__ = ["Driver", "ExitCodeKeeper", "Handle", "LogReader", "RuntimeRefused", "WorkloadNotFound"]

Handle = dict[str, Any]


class RuntimeRefused(HypercoreError):
    """This node will not run the workload (missing capability, bad spec for
    the driver, no capacity...). The scheduler tries the next node, so the
    message should tell a person what this node lacks."""


class WorkloadNotFound(HypercoreError):
    """No workload with this id on this node (or the id is not a workload id)."""


@runtime_checkable
class Driver(Protocol):
    """A way of running workloads, e.g. a local shell command or an OCI container."""

    @property
    def name(self) -> str:
        """The capability this driver provides, e.g. ``"exec"``."""
        ...

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> Handle:
        """Start the workload with stdout and stderr appended to ``log_path``.

        Returns the handle. Raises RuntimeRefused if the spec cannot run here.
        """
        ...

    async def wait(self, handle: Handle) -> int | None:
        """Return when the workload has ended: its exit code, or None when unknowable."""
        ...

    async def stop(self, handle: Handle, grace: float) -> None:
        """Ask the workload to end, force it after ``grace`` seconds; no-op if already gone."""
        ...

    async def is_alive(self, handle: Handle) -> bool:
        """True only if the very workload of this handle is still alive.

        Async because a driver may have to ask an engine (a subprocess); it is
        called on the event loop (WorkloadManager.adopt).
        """
        ...


# Optional hook, for drivers whose engine writes the workload's log file in its
# own format (the container driver lets Podman's conmon write CRI "k8s-file"
# lines into it). WorkloadManager.read_logs calls it instead of reading the
# file raw; drivers without it (exec) are unaffected.
@runtime_checkable
class LogReader(Protocol):
    async def read_logs(self, handle: Handle | None, log_path: Path, tail_bytes: int | None = None) -> bytes:
        """The workload's plain stdout+stderr (or its last ``tail_bytes`` bytes).

        Must not block the event loop: file reads in a thread, engine calls as
        asyncio subprocesses with a timeout.
        """
        ...


# Optional hook, for drivers whose engine keeps an ended workload's exit code
# (a container stays inspectable): WorkloadManager.adopt asks it for a
# workload that ended while the agent was down. Without it the code is unknown.
@runtime_checkable
class ExitCodeKeeper(Protocol):
    async def exit_code(self, handle: Handle) -> int | None:
        """The ended workload's exit code; None if unknown or still running."""
        ...
