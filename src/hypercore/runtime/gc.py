"""Garbage collection of finished workloads (what Nomad's ``gc_interval`` does for its allocations).

A workload that ended (exited, stopped, failed) more than ``--gc-after`` ago
is removed from its node the way ``cluster remove`` does it
(WorkloadManager.remove): its record, its directory with its logs, and its
container. Without it, a node that runs many short workloads keeps every
record, log and exited container for ever. Pending and running workloads are
never touched, nor are quarantined registry rows (their state is unknown).

The collector runs every ``min(gc_after / 10, 10 min)`` (at least every
second), so a workload goes at most a tenth of ``gc_after`` after its time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from hypercore.loops import periodic
from hypercore.runtime.base import RuntimeRefused, WorkloadNotFound
from hypercore.runtime.manager import WorkloadManager
from hypercore.workload import LIVE_STATES, WorkloadState

__all__ = ["FINISHED_STATES", "GarbageCollector", "gc_interval"]

log = logging.getLogger("hypercore.gc")

FINISHED_STATES: Final = frozenset(WorkloadState) - LIVE_STATES
_MAX_INTERVAL: Final = 600.0
_MIN_INTERVAL: Final = 1.0


def gc_interval(gc_after: float) -> float:
    """Seconds between two collections for a given ``gc_after``."""
    return max(_MIN_INTERVAL, min(gc_after / 10.0, _MAX_INTERVAL))


class GarbageCollector:
    def __init__(self, manager: WorkloadManager, gc_after: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        if gc_after <= 0:
            raise ValueError("gc_after must be positive")
        self.manager = manager
        self.gc_after = gc_after
        self._clock = clock

    async def collect(self) -> list[str]:
        """Remove every workload that finished more than ``gc_after`` seconds ago; their ids."""
        cutoff = self._clock() - self.gc_after
        removed: list[str] = []
        for record in self.manager.store.list(states=FINISHED_STATES):
            ended = record.finished_at if record.finished_at is not None else record.created_at
            if ended > cutoff:
                continue
            try:
                await self.manager.remove(record.id)
            except (RuntimeRefused, WorkloadNotFound):
                continue  # started again or removed since the list was read
            except Exception as exc:  # an engine that cannot remove one container must not stop the others
                log.warning("could not garbage-collect a finished workload",
                            extra={"id": record.id, "error": f"{type(exc).__name__}: {exc}"})
                continue
            removed.append(record.id)
        if removed:
            log.info("garbage-collected finished workloads",
                     extra={"count": len(removed), "older_than_s": f"{self.gc_after:g}"})
        return removed

    async def run(self) -> None:
        """Collect every gc_interval(gc_after) seconds until cancelled."""
        await periodic(gc_interval(self.gc_after), self.collect, what="garbage collection", log=log)
