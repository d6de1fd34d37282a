"""How long an exec start takes with and without a spare supervisor (hypercore.runtime.launch).

    sudo .venv/bin/python bench/start.py [--starts 30] [--spares 2] [--idle-processes 450]

Runs the node-local runtime alone (WorkloadManager + ExecDriver, SQLite on
disk, real supervisors, uids and cgroups; no agent, no HTTP): `true` started
`--starts` times, 0.2 s apart and then back to back, first by a driver that
starts a supervisor for each workload, then by one that keeps a spare. Prints
the median time of `accept()` (recorded, started, answered) for each.
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
import asyncio  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from hypercore.runtime import ExecDriver, WorkloadManager  # noqa: E402
from hypercore.store import WorkloadStore  # noqa: E402
from hypercore.workload import WorkloadSpec  # noqa: E402


async def starts(spares: int, count: int, gap: float) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="hc-start-") as tmp:
        data = Path(tmp) / "data"
        store = WorkloadStore(data)
        driver = ExecDriver(spares=spares)
        manager = WorkloadManager(store, data, {"exec": driver}, "bench")
        try:
            driver.warm_up()
            await asyncio.sleep(0.5)  # the spare has loaded
            times = []
            for _ in range(count):
                start = time.perf_counter()
                await manager.accept(WorkloadSpec(command="true"))
                times.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(gap)
            return times
        finally:
            await manager.close()
            store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--spares", type=int, default=2, help="spares the driver keeps (the agent's --exec-spares)")
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
    print(f"exec starts of `true`, {args.starts} each; median (p90) ms; {os.cpu_count()} cores, "
          f"{len([p for p in os.listdir('/proc') if p.isdigit()])} processes on the machine")
    for gap in (0.2, 0.0):
        cold = await starts(0, args.starts, gap)
        warm = await starts(args.spares, args.starts, gap)
        q = lambda v: f"{statistics.median(v):5.1f} ({sorted(v)[int(len(v) * 0.9)]:5.1f})"  # noqa: E731
        label = f"{gap:g} s apart" if gap else "back to back"
        print(f"{label:13s} supervisor started for each: {q(cold)}   {args.spares} spares: {q(warm)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
