"""The node's workload manager: accepts, records, watches and stops workloads.

It ties the drivers (what runs) to the store (what should run). Every state
change is written to the store *before* it is acted on where that matters (a
workload is PENDING in the registry before a driver starts it), so that an
agent killed at any point leaves a record that :meth:`WorkloadManager.adopt`
can reconcile at the next start-up.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import hypercore.runtime.capacity as admission
import hypercore.runtime.logs as runtime_logs
from hypercore.runtime.base import (Driver, Handle, LogReader, RuntimeRefused, WorkloadNotFound, examine, exit_reason,
                                    stop_unrecorded)
from hypercore.runtime.capacity import Capacity
from hypercore.store import DuplicateWorkload, WorkloadRecord, WorkloadStore
from hypercore.workload import LIVE_STATES, WorkloadSpec, WorkloadState, is_workload_id, new_workload_id

# Capacity lives in runtime.capacity; it is re-exported here, where callers import it.
__all__ = ["LOG_FILENAME", "LOST_ERROR", "NOT_STARTED_ERROR", "Capacity", "WorkloadManager"]

log = logging.getLogger(__name__)

LOG_FILENAME: Final = "output.log"
LOST_ERROR: Final = "lost while the agent was down"
NOT_STARTED_ERROR: Final = "the agent stopped before it started"  # nothing ran: a retry may start it
# How long stop() waits for the watcher to collect the exit code after the
# driver reported the workload stopped.
_EXIT_COLLECT_TIMEOUT: Final = 5.0


class WorkloadManager:
    """Runs workloads on this node with the given drivers and records them in ``store``."""

    def __init__(
        self,
        store: WorkloadStore,
        data_dir: str | os.PathLike[str],
        drivers: Mapping[str, Driver],
        node_name: str,
        *,
        max_workloads: int | None = None,
        capacity: Capacity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.node_name = node_name
        self.max_workloads = max_workloads
        self.capacity = capacity
        self._drivers = dict(drivers)
        self._clock = clock
        self._workloads_dir = Path(data_dir) / "workloads"
        self._workloads_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._watchers: dict[str, asyncio.Task[int | None]] = {}
        self._stops: dict[str, asyncio.Task[WorkloadRecord]] = {}
        # Ids whose end was requested: their watcher must not record EXITED.
        self._stop_requested: set[str] = set()
        self._stop_reasons: dict[str, str] = {}
        self._closed = False
        self.ended_accepted_at = 0.0  # when the latest-accepted workload that has ended was accepted (beacon news)

    # -- introspection ---------------------------------------------------------

    @property
    def capabilities(self) -> list[str]:
        # A driver may offer more than its name (the vm driver: `vm-kvm` when guests are accelerated).
        return sorted({*self._drivers, *(c for d in self._drivers.values() for c in getattr(d, "capabilities", ()))})

    def add_driver(self, driver: Driver) -> None:
        """Offer `driver.name` from now on (the agent adds drivers once they answer)."""
        self._drivers[driver.name] = driver

    def usage(self) -> tuple[float, float]:
        """(CPU cores, MB of memory) asked for by the workloads not yet finished."""
        return admission.usage(self.store)

    def queue_depth(self) -> int:
        """Workloads accepted and not finished (the beacon's queue-depth metric)."""
        return self.store.count_unfinished()

    def get(self, workload_id: str) -> WorkloadRecord:
        self._check_id(workload_id)
        record = self.store.get(workload_id)
        if record is None:
            raise WorkloadNotFound(f"no workload {workload_id} on node {self.node_name}")
        return record

    def list(self) -> list[WorkloadRecord]:
        return self.store.list()

    def logs_path(self, workload_id: str) -> Path:
        self.get(workload_id)  # validates the id before any path is built
        return self._workdir(workload_id) / LOG_FILENAME

    async def read_logs(self, workload_id: str, tail_bytes: int | None = None,
                        tail_lines: int | None = None) -> bytes:
        """The workload's combined stdout+stderr, or its last ``tail_bytes`` bytes (``tail_lines``: iter_logs').

        Never blocks the event loop: the file is read in a worker thread (a
        log can be big), a driver's own reader is awaited.
        """
        if tail_lines is not None:
            return b"".join([chunk async for chunk in self.iter_logs(workload_id, tail_lines=tail_lines)])
        path = self.logs_path(workload_id)
        # Hook (see base.LogReader): a driver that writes the log in its own
        # format (the container driver) turns it back into plain output.
        record = self.get(workload_id)
        driver = self._drivers.get(record.driver)
        if isinstance(driver, LogReader):
            return await driver.read_logs(record.handle, path, tail_bytes)
        return await asyncio.to_thread(runtime_logs.read_tail, path, tail_bytes)

    def iter_logs(self, workload_id: str, *, tail_lines: int | None = None,
                  max_bytes: int = runtime_logs.DEFAULT_MAX_BYTES) -> AsyncIterator[bytes]:
        """Output in chunks, capped, maybe only the last lines (runtime.logs); WorkloadNotFound before any."""
        path = self.logs_path(workload_id)
        record = self.get(workload_id)
        return runtime_logs.iter_logs(record, path, self._drivers.get(record.driver), tail_lines=tail_lines,
                                      max_bytes=max_bytes)

    # -- lifecycle -------------------------------------------------------------

    async def accept(
        self,
        spec: WorkloadSpec,
        workload_id: str | None = None,
        request_id: str | None = None,
        policy: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> WorkloadRecord:
        """Start ``spec`` here for user ``owner`` and return its RUNNING record.

        A retried request (same ``request_id``, or the same ``workload_id`` and
        spec) returns the first attempt's record instead of a second copy.
        Raises RuntimeRefused when this node will not run it.
        """
        if self._closed:
            raise RuntimeRefused(f"node {self.node_name} is shutting down")
        if request_id is not None:
            existing = self.store.get_by_request_id(request_id)
            if existing is not None and (replayed := self._replay(existing)) is not None:
                return replayed
        driver = self._drivers.get(spec.capability)
        if driver is None:
            offered = ", ".join(self.capabilities) or "none"
            raise RuntimeRefused(
                f"node {self.node_name} has no '{spec.capability}' capability "
                f"(it offers: {offered}); run it on a node that has one"
            )
        if workload_id is None:
            workload_id = new_workload_id()
        elif not is_workload_id(workload_id):
            raise RuntimeRefused(f"workload id {workload_id!r} is not a canonical UUID")
        else:
            existing = self.store.get(workload_id)
            if existing is not None:
                if existing.spec != spec:
                    raise RuntimeRefused(f"workload {workload_id} already exists here with a different spec")
                if (replayed := self._replay(existing)) is not None:
                    return replayed
        # No await from here to the insert: see check_admission.
        admission.check_admission(
            self.store, spec, node_name=self.node_name, capacity=self.capacity, max_workloads=self.max_workloads
        )

        record = WorkloadRecord(
            id=workload_id,
            request_id=request_id,
            spec=spec,
            state=WorkloadState.PENDING,
            driver=driver.name,
            node=self.node_name,
            created_at=self._clock(),
            policy=dict(policy) if policy is not None else None,
            owner=owner,
        )
        try:
            self.store.insert(record)
        except DuplicateWorkload:
            # Another agent process (or thread) won the race for this request.
            winner = self.store.get_by_request_id(request_id) if request_id is not None else None
            if winner is None:
                winner = self.store.get(workload_id)
                if winner is None or winner.spec != spec:
                    raise RuntimeRefused(f"workload {workload_id} already exists here with a different spec")
            return self._replay(winner) or winner

        workdir = self._workdir(workload_id)
        try:
            workdir.mkdir(mode=0o700, exist_ok=True)
            handle = await driver.start(workload_id, spec, workdir / LOG_FILENAME)
        except BaseException as exc:
            # Includes cancellation (placement deadline): the record must not
            # stay PENDING forever.
            error = str(exc) or type(exc).__name__
            self._stop_requested.discard(workload_id)
            self._finish(workload_id, WorkloadState.FAILED, error=error)
            if isinstance(exc, OSError):
                raise RuntimeRefused(f"node {self.node_name} could not start the workload: {exc}") from exc
            raise

        updated = self._update(
            workload_id, state=WorkloadState.RUNNING, handle=handle, started_at=self._clock()
        )
        self._watch(workload_id, driver, handle)
        if workload_id in self._stop_requested:
            # stop() came in while the driver was starting it.
            return await self.stop(workload_id, reason=self._stop_reasons.pop(workload_id, None))
        return updated

    async def stop(self, workload_id: str, grace: float = 5.0, reason: str | None = None) -> WorkloadRecord:
        """End a workload (SIGTERM, then SIGKILL after ``grace``) and return its record.

        Idempotent: a finished workload is returned unchanged, and concurrent
        calls for one id share one stop. ``reason`` is recorded as the record's
        error when the system, not a user, stopped it (e.g. a retracted copy).
        """
        record = self.get(workload_id)
        if record.state.finished:
            return record
        running = self._stops.get(workload_id)
        # A finished task may linger until its done-callback runs; it must not
        # answer for a workload that was (re)started since.
        if running is None or running.done():
            # Marked now, not when _stop runs: an accept() whose start returns meanwhile must see it.
            self._stop_requested.add(workload_id)
            if reason is not None:
                self._stop_reasons[workload_id] = reason
            running = asyncio.ensure_future(self._stop(workload_id, grace, reason))
            self._stops[workload_id] = running
            running.add_done_callback(lambda _t: self._stops.pop(workload_id, None))
        return await asyncio.shield(running)

    async def _stop(self, workload_id: str, grace: float, reason: str | None = None) -> WorkloadRecord:
        # Read now, not when stop() was called: a start that returned in between has a handle to stop
        # (with the record stop() saw, a copy started meanwhile was marked STOPPED and ran on).
        record = self.get(workload_id)
        if record.state.finished:
            return record
        if record.handle is None:
            # Still PENDING: accept() will see the request once start returns.
            return self._finish(record.id, WorkloadState.STOPPED, error=reason)
        driver = self._drivers.get(record.driver)
        if driver is None:
            raise RuntimeRefused(
                f"workload {record.id} was started by the '{record.driver}' driver, "
                f"which node {self.node_name} no longer has; it cannot be stopped from here"
            )
        # Take the watcher first: it forgets itself as soon as the process ends.
        watcher = self._watchers.get(record.id)
        await driver.stop(record.handle, grace)
        exit_code: int | None = None
        if watcher is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                exit_code = await asyncio.wait_for(asyncio.shield(watcher), _EXIT_COLLECT_TIMEOUT)
        stopped = self._finish(record.id, WorkloadState.STOPPED, exit_code=exit_code, error=reason)
        if watcher is None or watcher.done():
            self._stop_requested.discard(record.id)
        else:  # keep the mark until the watcher is done, so it cannot record EXITED
            watcher.add_done_callback(lambda _t: self._stop_requested.discard(record.id))
        return stopped

    async def remove(self, workload_id: str) -> WorkloadRecord:
        """Forget a finished workload: its record, its logs and its container, if any.

        A workload that has not finished is refused (stop it first), so that
        removing never ends something by surprise.
        """
        record = self.get(workload_id)
        if not record.state.finished:
            raise RuntimeRefused(f"workload {workload_id} is {record.state.value}; stop it before removing it")
        driver = self._drivers.get(record.driver)
        remover = getattr(driver, "remove", None)
        if remover is not None and record.handle is not None:
            await remover(record.handle)
        shutil.rmtree(self._workdir(workload_id), ignore_errors=True)
        self.store.delete(workload_id)
        return record

    async def adopt(self) -> builtins.list[WorkloadRecord]:
        """Reconcile the registry with reality after a (re)start of the agent.

        Every PENDING/RUNNING workload whose driver is known is re-attached to a watcher (still running)
        or marked ended; one the agent died starting is found by id (base.examine); what runs with no
        record is stopped. Returns the records examined, in their new state.
        """
        examined: builtins.list[WorkloadRecord] = []
        for record in self.store.list(states=LIVE_STATES):
            driver = self._drivers.get(record.driver)
            if driver is None or record.id in self._watchers:
                continue  # another driver set may know it; already watched
            handle, alive, exit_code, error = await examine(
                driver, record.handle, record.id, self._workdir(record.id) / LOG_FILENAME)
            # The awaits let other tasks run: act only if none has taken it on since.
            current = self.store.get(record.id)
            if current is None or current.state not in LIVE_STATES or record.id in self._watchers:
                continue
            if record.id in self._stop_requested:
                continue  # a stop() is on it and will record the end
            if alive and handle is not None:
                self._watch(record.id, driver, handle)
                if record.state is WorkloadState.PENDING:
                    record = self._update(record.id, state=WorkloadState.RUNNING, handle=handle, started_at=self._clock())
                log.info("adopted workload %s (driver %s)", record.id, record.driver)
            elif handle is None:  # recorded, but nothing of it was ever started
                record = self._finish(record.id, WorkloadState.FAILED, error=NOT_STARTED_ERROR)
            else:
                error = error or (None if exit_code is not None else LOST_ERROR)
                self._update(record.id, handle=handle)
                record = self._finish(record.id, WorkloadState.EXITED, exit_code=exit_code, error=error)
                log.warning("workload %s ended while the agent was down (exit code %s)", record.id, exit_code)
            examined.append(record)
        await stop_unrecorded(self._drivers.values(), self.store.get, self._workloads_dir)
        return examined

    async def close(self) -> None:
        """Stop watching; the workloads keep running, for adopt() to find later."""
        self._closed = True
        tasks = [*self._watchers.values(), *self._stops.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers.clear()
        for driver in self._drivers.values():
            if (close := getattr(driver, "close", None)) is not None:  # e.g. the exec driver's zygote
                await close()

    # -- internals -------------------------------------------------------------

    def _replay(self, existing: WorkloadRecord) -> WorkloadRecord | None:
        # A retry gets the first attempt's answer: its record, or the same
        # refusal if the driver refused to start it (so the scheduler moves on).
        if existing.state is WorkloadState.FAILED and existing.started_at is None:
            if existing.error == NOT_STARTED_ERROR and self.store.delete(existing.id):
                return None  # the agent died before anything of it ran: this retry starts it
            raise RuntimeRefused(existing.error or f"workload {existing.id} could not be started here")
        return existing

    def _check_id(self, workload_id: str) -> None:
        # Ids become directory names; only canonical UUIDs ever reach a path.
        if not isinstance(workload_id, str) or not is_workload_id(workload_id):
            raise WorkloadNotFound(f"{workload_id!r} is not a workload id")

    def _workdir(self, workload_id: str) -> Path:
        self._check_id(workload_id)
        return self._workloads_dir / workload_id

    def _update(self, workload_id: str, **fields: Any) -> WorkloadRecord:
        record = self.store.update(workload_id, **fields)
        if record is None:
            raise WorkloadNotFound(f"workload {workload_id} vanished from the registry")
        return record

    def _finish(
        self, workload_id: str, state: WorkloadState, *, exit_code: int | None = None, error: str | None = None
    ) -> WorkloadRecord:
        record = self._update(workload_id, state=state, exit_code=exit_code, error=error, finished_at=self._clock())
        self.ended_accepted_at = max(self.ended_accepted_at, record.created_at)
        return record

    def _watch(self, workload_id: str, driver: Driver, handle: Handle) -> None:
        task = asyncio.ensure_future(self._wait_for_exit(workload_id, driver, handle))
        self._watchers[workload_id] = task

        def forget(done: asyncio.Task[int | None]) -> None:
            if self._watchers.get(workload_id) is done:
                del self._watchers[workload_id]

        task.add_done_callback(forget)

    async def _wait_for_exit(self, workload_id: str, driver: Driver, handle: Handle) -> int | None:
        try:
            exit_code = await driver.wait(handle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a driver bug must not leave the record RUNNING forever
            log.exception("waiting for workload %s failed", workload_id)
            if workload_id not in self._stop_requested:
                self._finish(workload_id, WorkloadState.FAILED, error=f"lost track of the workload: {exc}")
            return None
        error = await exit_reason(driver, handle)  # e.g. out of memory; before the check, which must not await
        if workload_id not in self._stop_requested:
            # Ended by itself; a requested stop records STOPPED in _stop().
            self._finish(workload_id, WorkloadState.EXITED, exit_code=exit_code, error=error)
            log.info("workload %s exited with code %s", workload_id, exit_code)
        return exit_code
