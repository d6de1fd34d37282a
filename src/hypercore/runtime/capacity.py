"""What a node lets in: its CPU and memory capacity, and how many workloads.

Admission is decided from the registry alone (the specs of the workloads not
yet finished), so it needs no driver and holds across agent restarts.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from hypercore.runtime.base import RuntimeRefused
from hypercore.store import WorkloadStore
from hypercore.workload import LIVE_STATES, WorkloadSpec

__all__ = ["MIN_CPU", "Capacity", "check_admission", "usage"]

# Float slack, so that e.g. ten workloads of 0.1 CPU fit in one core.
_EPSILON = 1e-9
# The least CPU a workload may ask for: below it, `max_workloads` would be the only bound on a node's load.
MIN_CPU = 0.01


@dataclass(frozen=True)
class Capacity:
    """What this node offers in total: CPU cores and memory in MB."""

    cpu: float
    mem_mb: float

    @classmethod
    def of_machine(cls, cpu: float | None = None, mem_mb: float | None = None) -> Capacity:
        """The given figures, and for each one not given the machine's own (its cores, its MemTotal)."""
        return cls(cpu=cpu if cpu is not None else float(os.cpu_count() or 1),
                   mem_mb=mem_mb if mem_mb is not None else (_mem_total_mb() or 1024.0))


def _mem_total_mb() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return None


def usage(store: WorkloadStore) -> tuple[float, float]:
    """(CPU cores, MB of memory) asked for by the workloads not yet finished."""
    cpu = mem = 0.0
    for record in store.list(states=LIVE_STATES):
        cpu += record.spec.cpu
        mem += record.spec.mem
    return cpu, mem


def check_admission(
    store: WorkloadStore,
    spec: WorkloadSpec,
    *,
    node_name: str,
    capacity: Capacity | None,
    max_workloads: int | None,
) -> None:
    """Raise RuntimeRefused when ``spec`` does not fit on this node now.

    The caller must insert the record with no ``await`` in between, so that
    two spawns on one event loop cannot both take the last free core.
    """
    if spec.cpu < MIN_CPU - _EPSILON:
        raise RuntimeRefused(
            f"node {node_name} refuses a workload asking for {spec.cpu:g} CPU: "
            f"a workload must ask for at least {MIN_CPU:g} CPU"
        )
    if capacity is not None:
        cpu_used, mem_used = usage(store)
        cpu_free = capacity.cpu - cpu_used
        mem_free = capacity.mem_mb - mem_used
        if spec.cpu > cpu_free + _EPSILON or spec.mem > mem_free + _EPSILON:
            raise RuntimeRefused(
                f"node {node_name} lacks capacity: the workload asks for {spec.cpu:g} CPU and "
                f"{spec.mem} MB; free are {max(cpu_free, 0):g} of {capacity.cpu:g} CPU and "
                f"{max(mem_free, 0):.0f} of {capacity.mem_mb:.0f} MB"
            )
    if max_workloads is not None and store.count_unfinished() >= max_workloads:
        raise RuntimeRefused(
            f"node {node_name} is at capacity ({max_workloads} workloads running or pending)"
        )
