"""What a runtime driver is, and the errors the runtime layer raises.

A driver turns a :class:`~hypercore.workload.WorkloadSpec` into something
running on this machine and back. It names the capability it provides
(``exec``, ``container``), which is what a node advertises and what a spec
asks for. Everything a driver needs to find its workload again, even after the
agent restarted, goes into the *handle*: a JSON-serialisable dict that the
manager stores in the registry and hands back on every later call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hypercore.errors import HypercoreError
from hypercore.workload import WorkloadSpec, is_workload_id

__all__ = ["Driver", "ExitCodeKeeper", "ExitReporter", "Handle", "Locator", "LogReader", "RuntimeRefused",
           "WorkloadNotFound", "examine", "exit_reason", "stop_unrecorded"]

log = logging.getLogger(__name__)

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


# Optional hook, for drivers that know *why* a workload ended (the exec
# supervisor sees an out-of-memory kill): the manager records it as the error.
@runtime_checkable
class ExitReporter(Protocol):
    async def exit_reason(self, handle: Handle) -> str | None:
        """Why the ended workload ended, when it was not a plain exit; None otherwise."""
        ...


# Optional hook, for drivers that find a workload from its id alone (the exec
# supervisor's state file in the workload's directory, a container's name and
# label): an agent killed between recording a workload and storing its handle
# finds it again, and nothing runs that the registry does not know.
@runtime_checkable
class Locator(Protocol):
    async def locate(self, workload_id: str, log_path: Path) -> Handle | None:
        """The handle of what was started for ``workload_id`` (running or ended); None if nothing was."""
        ...

    async def running(self, workloads_dir: Path) -> dict[str, Handle]:
        """Every workload of this node the driver has running now, by id."""
        ...


async def examine(driver: Driver, handle: Handle | None, workload_id: str,
                  log_path: Path) -> tuple[Handle | None, bool, int | None, str | None]:
    """What became of a workload while the agent was down: (handle, alive, exit code, why it ended).

    Without a handle (the agent died starting it) the driver looks it up by
    id; the handle is None only if nothing of it was ever started. Of an ended
    workload, the engine may still know the exit code (a container keeps it, an
    exec supervisor records it) and why (out of memory, a signal).
    """
    if handle is None and isinstance(driver, Locator):
        handle = await driver.locate(workload_id, log_path)
    if handle is None or await driver.is_alive(handle):
        return handle, handle is not None, None, None
    code = await driver.exit_code(handle) if isinstance(driver, ExitCodeKeeper) else None
    return handle, False, code, await exit_reason(driver, handle)


async def exit_reason(driver: Driver, handle: Handle | None) -> str | None:
    return await driver.exit_reason(handle) if handle is not None and isinstance(driver, ExitReporter) else None


async def stop_unrecorded(drivers: Iterable[Driver], known: Callable[[str], object], workloads_dir: Path) -> list[str]:
    """Stop what runs here with no record at all (e.g. a lost registry); the ids stopped.

    Only workloads whose directory is in ``workloads_dir`` count: a container
    merely labelled with this node's name may belong to another agent.
    """
    stopped = []
    for driver in drivers:
        if not isinstance(driver, Locator):
            continue
        try:
            found = await driver.running(workloads_dir)
        except Exception as exc:  # an engine that does not answer must not stop the start-up
            log.warning("could not list the %s workloads running here: %s", driver.name, exc)
            continue
        for wid, handle in found.items():
            if is_workload_id(wid) and known(wid) is None and (workloads_dir / wid).is_dir():
                log.warning("stopping workload %s: it runs here but the registry has no record of it", wid)
                await driver.stop(handle, 5.0)
                stopped.append(wid)
    return stopped
