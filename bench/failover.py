"""Time from a node's SIGKILL to all its workloads running again, on real clusters on loopback.

Each run starts a fresh three-node cluster (every node with
--respawn-on-node-failure, --serf-profile local), places W `sleep 300`
workloads on the cheapest node "a" with the cost-optimized policy, waits until
a's buddies hold its manifest, SIGKILLs a, and polls /proc every 50 ms:
  total      SIGKILL → every workload runs again, i.e. a live `sleep` process
             carries its respawn id (read from /proc, not from any registry);
  detection  SIGKILL → the first survivor's failover loop sees a `failed`
             (the timestamp of its "node failed; its manifest is held here"
             log line): Serf's failure detection, plus up to 1 s until the agent
             reads Serf's members and 0.5 s until the failover loop looks;
  respawn    total - detection: election, placement, process start.
Prints each run and the medians.

Then the spawn load test: N concurrent spawn requests (distinct request ids)
against one node of a fresh three-node cluster; prints throughput, p50/p99
latency, status codes, per-node spread and copies counted from /proc.
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` module, since
# Python puts this script's directory first on sys.path: drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import calendar
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp

from hypercore.devcluster import Cluster, Node, live_workload_processes, wait_for
from hypercore.failover import respawn_id

ROOT = Path(__file__).resolve().parents[1]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
FLAGS = ("--enable-exec", "--disable-containers", "--respawn-on-node-failure")


def log_times(text: str, msg: str) -> list[float]:
    """Unix times of the agent log lines with this message."""
    out = []
    for line in text.splitlines():
        if f'msg="{msg}"' in line and line.startswith("time="):
            stamp = line.split()[0][len("time="):]
            out.append(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + stamp[19:-1]))
    return out


def one_run(root: Path, workloads: int) -> tuple[float, float]:
    cluster = Cluster(root)
    try:
        a = cluster.add("a", *FLAGS, "--beacon-price", "0.005")
        b = cluster.add("b", *FLAGS, "--beacon-price", "0.020")
        cluster.add("c", *FLAGS, "--beacon-price", "0.030")
        cluster.wait_converged()
        ids = []
        for _ in range(workloads):
            r = b.post("/v1/workloads", {"spec": {"command": "sleep 300", "cpu": 0.1}, "policy": COST,
                                         "request_id": str(uuid.uuid4())})
            if r.status_code != 201 or r.json()["node"] != "a":
                sys.exit(f"spawn did not land on a: HTTP {r.status_code} {r.text[:300]}")
            ids.append(r.json()["id"])

        def replicated() -> bool:
            s = a.node_request("GET", "/v1/local/failover").json()
            return s["workloads"] == workloads and len(s["buddies"]) == 2 and all(
                x["acked"] == s["version"] for x in s["buddies"].values())

        wait_for(replicated, 15, "a's manifest on its buddies")
        wanted = {respawn_id(i) for i in ids}
        a.kill()
        killed = time.time()
        while time.time() - killed < 60:
            if wanted <= set(live_workload_processes()):
                total = time.time() - killed
                break
            time.sleep(0.05)
        else:
            sys.exit("the workloads did not run again within 60 s")
        seen = [t for name in ("b", "c") for t in log_times(cluster[name].log(), "node failed; its manifest is held here")]
        detection = min(seen) - killed if seen else total
        return detection, total - detection
    finally:
        cluster.close()


async def _spawn_burst(node: Node, n: int) -> tuple[float, list[tuple[int, float, dict]]]:
    headers = {"Authorization": f"Bearer {node.token}"}
    connector = aiohttp.TCPConnector(limit=0, ssl=node.pki.verify())
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async def one(i: int) -> tuple[int, float, dict]:
            body = {"spec": {"command": "sleep 300", "cpu": 0.01, "mem": 1}, "request_id": f"load-{uuid.uuid4()}"}
            start = time.perf_counter()
            async with session.post(f"{node.url}/v1/workloads", json=body, timeout=aiohttp.ClientTimeout(total=300)) as r:
                payload = await r.json()
                return r.status, time.perf_counter() - start, payload

        began = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - began, list(results)


def load_test(n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="hc-load-"))
    cluster = Cluster(root)
    try:
        for name in ("a", "b", "c"):
            cluster.add(name, "--enable-exec", "--disable-containers", "--capacity-cpu", "1000",
                        "--spawn-rate", "1000", "--spawn-burst", "1000")
        cluster.wait_converged()
        wall, results = asyncio.run(_spawn_burst(cluster["a"], n))
        statuses = Counter(status for status, _, _ in results)
        latencies = sorted(lat for _, lat, _ in results)
        ids = [body.get("id") for status, _, body in results if status == 201]
        spread = Counter(body.get("node") for status, _, body in results if status == 201)
        # A 201 means the workload's shell started; under this load it may not have exec'd `sleep` yet (counted
        # right away, 7-10 of 200 were still `sh`): wait until each has its process, then count the copies.
        deadline = time.monotonic() + 10.0
        while any((copies := live_workload_processes())[i] == 0 for i in ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"load: {n} concurrent spawns to node a of 3: {n / wall:.1f} spawns/s over {wall:.2f} s; "
              f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {latencies[int(0.99 * (n - 1))] * 1000:.0f} ms")
        print(f"      statuses {dict(statuses)}; per node {dict(spread)} (fair share {n / 3:.1f}, "
              f"limit 1.5x = {1.5 * n / 3:.0f}); distinct ids {len(set(ids))}; "
              f"running exactly once: {sum(1 for i in ids if copies[i] == 1)}/{len(ids)}")
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", type=int, default=3)
    parser.add_argument("--load", type=int, default=200, help="concurrent spawns in the load test (0: skip)")
    args = parser.parse_args()
    if shutil.which("serf") is None:
        sys.exit("serf is not installed (apt-get install serf)")
    detections, respawns, totals = [], [], []
    for run in range(1, args.runs + 1):
        root = Path(tempfile.mkdtemp(prefix="hc-failover-"))
        try:
            detection, respawn = one_run(root, args.workloads)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        detections.append(detection)
        respawns.append(respawn)
        totals.append(detection + respawn)
        print(f"run {run}: detection {detection:.2f} s  respawn {respawn:.2f} s  total {detection + respawn:.2f} s",
              flush=True)
    med = statistics.median
    print(f"median of {args.runs} runs, {args.workloads} workloads each: detection {med(detections):.2f} s, "
          f"respawn {med(respawns):.2f} s, total {med(totals):.2f} s (SIGKILL to all running again)")
    if args.load:
        load_test(args.load)


if __name__ == "__main__":
    main()
