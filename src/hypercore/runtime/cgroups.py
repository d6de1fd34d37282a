"""A workload's resource limits: cgroups (v2 where a controller is enabled there, else its v1
hierarchy; a host may mix both), and rlimits for what no cgroup controller covers.

Each workload gets ``hypercore/<workload id>`` under each hierarchy it uses,
with ``memory`` (v1: ``memory.limit_in_bytes`` and, when present,
``memory.memsw.limit_in_bytes``; v2: ``memory.max``, ``memory.swap.max=0``),
``cpu`` (v1: ``cpu.cfs_quota_us``/``cpu.cfs_period_us``; v2: ``cpu.max``) and
``pids`` (``pids.max``). A controller that cannot be used falls back to
``RLIMIT_AS`` (memory: address space, not resident memory) or
``RLIMIT_NPROC`` (processes of the uid, which is the workload's own); CPU
then has no limit. :attr:`Cgroups.enforcement` says what holds, for the
workload's state file.

Standard library only: the supervisor loads this file without the hypercore
package (see hypercore.runtime.supervisor).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path

__all__ = ["CGROUP_PARENT", "Cgroups", "cgroups_for", "cgroups_from", "rlimits_for"]

CGROUP_PARENT = "hypercore"
CPU_PERIOD_US = 100_000
_RESOURCES = ("memory", "cpu", "pids")


def _mounts() -> tuple[Path | None, dict[str, Path]]:
    """(the cgroup v2 mount, {v1 controller: its mount}) from /proc/self/mountinfo."""
    v2: Path | None = None
    v1: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fstype, _source, options = (right.split() + ["", "", ""])[:3]
            point = Path(left.split()[4].replace("\\040", " "))
            if fstype == "cgroup2" and v2 is None:
                v2 = point
            elif fstype == "cgroup":
                for name in set(options.split(",")) & set(_RESOURCES):
                    v1.setdefault(name, point)
    return v2, v1


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


class Cgroups:
    """The cgroup directories of one workload, by resource, and how each limit is enforced."""

    def __init__(self, dirs: dict[str, Path] | None = None, enforcement: dict[str, str] | None = None,
                 versions: dict[str, int] | None = None) -> None:
        self.dirs = dirs or {}
        self.enforcement = enforcement or {}
        self.versions = versions or {}

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in sorted(set(self.dirs.values()))]

    def join_files(self) -> list[Path]:
        """What a single-threaded process writes "0" to, to move itself into the workload's cgroups.

        v1: ``tasks``, not ``cgroup.procs``. Moving a whole process takes the kernel's global
        threadgroup lock for writing, which waits for an RCU grace period: 10-20 ms on this machine,
        on the way of every start. Moving the calling thread alone skips that lock (Linux >= 5.18),
        and between fork and exec the workload's first process has one thread: 0.4 ms for all three
        hierarchies. v2 has no such file outside threaded subtrees, so there it stays ``cgroup.procs``.
        """
        files = {}
        for name, d in self.dirs.items():
            files[d] = d / ("tasks" if self.versions.get(name) == 1 else "cgroup.procs")
        return [files[d] for d in sorted(files)]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in path.read_text().split())
        return found

    def exiting(self) -> bool:
        """Whether a process that already left ``cgroup.procs`` on its way out still exists: the pids
        controller counts each until it is reaped (a workload killed with its PID namespace is listed by
        /proc for a moment after its cgroup looks empty)."""
        d = self.dirs.get("pids")
        with contextlib.suppress(OSError, ValueError):
            return d is not None and int((d / "pids.current").read_text()) > 0
        return False

    def oom_kills(self) -> int:
        """How many of the workload's processes the kernel killed for lack of memory in its cgroup."""
        memory = self.dirs.get("memory")
        name = "memory.events" if self.versions.get("memory") == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (memory / name).read_text().splitlines() if memory else []:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def remove(self, timeout: float = 2.0) -> bool:
        """rmdir every directory (they must be empty of processes); True when all are gone."""
        deadline = time.monotonic() + timeout
        left = set(self.dirs.values())
        while left:
            for d in list(left):
                try:
                    d.rmdir()
                    left.discard(d)
                except FileNotFoundError:
                    left.discard(d)
                except OSError:
                    pass
            if left and time.monotonic() > deadline:
                return False
            if left:
                time.sleep(0.02)
        return True


def cgroups_from(state: dict[str, object]) -> Cgroups:
    """The Cgroups a supervisor recorded in its state file (for cleaning up after it)."""
    dirs = state.get("cgroups") if isinstance(state.get("cgroups"), dict) else {}
    versions = state.get("cgroup_versions") if isinstance(state.get("cgroup_versions"), dict) else {}
    return Cgroups({k: Path(v) for k, v in dirs.items() if isinstance(v, str)},  # type: ignore[union-attr]
                   {}, {k: int(v) for k, v in versions.items()})  # type: ignore[union-attr]


def _v2_dir(root: Path, workload_id: str, wanted: set[str]) -> tuple[Path, set[str]]:
    """Create ``<root>/hypercore/<id>`` with what it can of ``wanted`` enabled; (dir, controllers)."""
    available = set((root / "cgroup.controllers").read_text().split()) & wanted
    if not available:
        return root, set()
    parent = root / CGROUP_PARENT
    parent.mkdir(exist_ok=True)
    enable = " ".join(f"+{c}" for c in sorted(available))
    _write(root / "cgroup.subtree_control", enable)
    _write(parent / "cgroup.subtree_control", enable)
    leaf = parent / workload_id
    leaf.mkdir()
    return leaf, set((leaf / "cgroup.controllers").read_text().split()) & available


def _limit(resource_name: str, d: Path, version: int, mem_mb: int, cpu: float, pids_max: int) -> str:
    """Write one resource's limit into ``d``; what now enforces it, for the state file."""
    mem = mem_mb * 1024 * 1024
    if resource_name == "memory" and version == 2:
        _write(d / "memory.max", str(mem))
        if (d / "memory.swap.max").exists():
            _write(d / "memory.swap.max", "0")
        return f"cgroup v2 memory.max={mem}"
    if resource_name == "memory":
        _write(d / "memory.limit_in_bytes", str(mem))
        if (d / "memory.memsw.limit_in_bytes").exists():
            _write(d / "memory.memsw.limit_in_bytes", str(mem))  # no escape into swap
            return f"cgroup v1 memory.limit_in_bytes=memory.memsw.limit_in_bytes={mem}"
        return f"cgroup v1 memory.limit_in_bytes={mem}"
    quota = max(1000, int(cpu * CPU_PERIOD_US))
    if resource_name == "cpu" and version == 2:
        _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        return f"cgroup v2 cpu.max={quota} {CPU_PERIOD_US}"
    if resource_name == "cpu":
        _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(d / "cpu.cfs_quota_us", str(quota))
        return f"cgroup v1 cpu.cfs_quota_us={quota} cpu.cfs_period_us={CPU_PERIOD_US}"
    _write(d / "pids.max", str(pids_max))
    return f"cgroup v{version} pids.max={pids_max}"


def cgroups_for(workload_id: str, mem_mb: int, cpu: float, pids_max: int, *, use_cgroups: bool = True) -> Cgroups:
    """Create the workload's cgroups and set its limits; what could not be set is left to rlimits."""
    cg = Cgroups()
    created: set[Path] = set()
    if use_cgroups and os.geteuid() == 0:
        v2, v1 = _mounts()
        if v2 is not None:
            with contextlib.suppress(OSError):
                leaf, enabled = _v2_dir(v2, workload_id, set(_RESOURCES))
                created.update([leaf] if leaf != v2 else [])
                for name in enabled:
                    cg.dirs[name], cg.versions[name] = leaf, 2
        for name in _RESOURCES:
            if name not in cg.dirs and name in v1:
                with contextlib.suppress(OSError):
                    d = v1[name] / CGROUP_PARENT / workload_id
                    d.mkdir(parents=True)
                    created.add(d)
                    cg.dirs[name], cg.versions[name] = d, 1
        for name, d in list(cg.dirs.items()):
            try:
                cg.enforcement[name] = _limit(name, d, cg.versions[name], mem_mb, cpu, pids_max)
            except OSError:
                del cg.dirs[name]
        for d in created - set(cg.dirs.values()):  # made, but no limit of it held
            with contextlib.suppress(OSError):
                d.rmdir()
    for name in _RESOURCES:
        if name not in cg.dirs:
            cg.enforcement[name] = {"memory": f"rlimit RLIMIT_AS={mem_mb * 1024 * 1024}",
                                    "pids": f"rlimit RLIMIT_NPROC={pids_max}", "cpu": "none"}[name]
    return cg


def rlimits_for(cg: Cgroups, mem_mb: int, pids_max: int, dedicated_uid: bool) -> list[tuple[int, int]]:
    """The rlimits that stand in for missing cgroup controllers (and no core dumps, ever)."""
    limits = [(resource.RLIMIT_CORE, 0)]
    if "memory" not in cg.dirs:
        limits.append((resource.RLIMIT_AS, mem_mb * 1024 * 1024))
    if "pids" not in cg.dirs and dedicated_uid:  # per uid: only meaningful for a uid of its own
        limits.append((resource.RLIMIT_NPROC, pids_max))
    elif "pids" not in cg.dirs:
        cg.enforcement["pids"] = "none (no cgroup, and no uid of its own for RLIMIT_NPROC)"
    return limits


