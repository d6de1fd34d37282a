"""How long an exec start takes with and without the zygote (hypercore.runtime.launch).

    sudo .venv/bin/python bench/start.py [--starts 30] [--idle-processes 480]

Runs the node-local runtime alone (WorkloadManager + ExecDriver, SQLite on
disk, real supervisors, uids and cgroups; no agent, no HTTP): `true` started
`--starts` times, 0.2 s apart and then back to back, first by a driver that
starts a supervisor for each workload, then by one that forks it from its
zygote. Prints the median time of `accept()` (recorded, started, answered)
and the CPU the driver's children used per start (supervisors and the zygote,
reaped or not: from /proc, what `time` would miss for those not reaped).
`--idle-processes N` keeps N sleeping processes beside it for the run (a
100-node scale bench has about 570 processes on the machine).
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` module: drop this directory from sys.path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import resource  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from hypercore.runtime import ExecDriver, WorkloadManager  # noqa: E402
from hypercore.store import WorkloadStore  # noqa: E402
from hypercore.workload import WorkloadSpec  # noqa: E402


async def starts(zygote: bool, count: int, gap: float) -> tuple[list[float], float, float]:
    """Start times (ms), and CPU per start (ms) of this process and of its children (supervisors, the zygote
    and the workloads: reaped by the time the driver is closed)."""
    with tempfile.TemporaryDirectory(prefix="hc-start-") as tmp:
        data = Path(tmp) / "data"
        store = WorkloadStore(data)
        driver = ExecDriver(zygote=zygote)
        manager = WorkloadManager(store, data, {"exec": driver}, "bench")
        before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            driver.warm_up()
            await asyncio.sleep(0.5)  # the zygote has loaded
            times = []
            for _ in range(count):
                start = time.perf_counter()
                await manager.accept(WorkloadSpec(command="true"))
                times.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(gap)
            await asyncio.sleep(1.0)  # the last supervisors have recorded their workload's end
        finally:
            await manager.close()
            store.close()
        after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = [(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1000 / count for a, b in zip(before, after)]
        return times, cpu[0], cpu[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--idle-processes", type=int, default=0, help="sleeping processes kept beside the run")
    args = parser.parse_args()
    idle = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.idle_processes)]
    try:
        await run(args)
    finally:
        for proc in idle:
            proc.kill()
            proc.wait()


async def run(args: argparse.Namespace) -> None:
    print(f"exec starts of `true`, {args.starts} each; median (p90) ms, then CPU ms per start of this process + of "
          f"its children; {os.cpu_count()} cores, {len([p for p in os.listdir('/proc') if p.isdigit()])} processes "
          "on the machine")
    for gap in (0.2, 0.0):
        row = []
        for zygote in (False, True):
            times, own, children = await starts(zygote, args.starts, gap)
            row.append(f"{statistics.median(times):5.1f} ({sorted(times)[int(len(times) * 0.9)]:5.1f}) "
                       f"cpu {own:4.1f} + {children:4.1f}")
        label = f"{gap:g} s apart" if gap else "back to back"
        print(f"{label:13s} supervisor started for each: {row[0]}   forked from the zygote: {row[1]}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
