"""Policy-routed spawn vs direct spawn, on a real two-node cluster on loopback.

routed: POST /v1/workloads to node A; the policy places it on node B (A has
        no exec driver), so the request pays for A's decision and the A→B hop.
direct: POST /v1/local/workloads to node B itself (what A sends to B).
Both run the same workload (`true`) and return once B has started it.
Prints the median of interleaved runs and the ratio (target: ≤ 1.5).
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` module, since
# Python puts this script's directory first on sys.path: drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from hypercore.devcluster import Cluster

SPEC = {"command": "true"}


def timed(client: httpx.Client, url: str, body: dict) -> float:
    start = time.perf_counter()
    r = client.post(url, json=body)
    elapsed = (time.perf_counter() - start) * 1000
    if r.status_code != 201:
        sys.exit(f"spawn failed: HTTP {r.status_code} {r.text}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hypercore-bench-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            a = cluster.add("a")
            b = cluster.add("b", "--enable-exec")
            cluster.wait_converged()
            headers = {"Authorization": f"Bearer {cluster.token}"}
            with httpx.Client(headers=headers, timeout=30) as client:
                routed_url, direct_url = f"{a.url}/v1/workloads", f"{b.url}/v1/local/workloads"
                for _ in range(5):  # warm up connections and code paths
                    timed(client, routed_url, {"spec": SPEC})
                    timed(client, direct_url, {"id": str(uuid.uuid4()), "spec": SPEC})
                routed, direct = [], []
                for _ in range(args.runs):
                    routed.append(timed(client, routed_url, {"spec": SPEC}))
                    direct.append(timed(client, direct_url, {"id": str(uuid.uuid4()), "spec": SPEC}))
        finally:
            cluster.close()
    r, d = statistics.median(routed), statistics.median(direct)
    print(f"runs: {args.runs} each, interleaved; workload: {SPEC['command']!r} on node b")
    print(f"routed spawn (A decides, places on B): median {r:7.2f} ms  p90 {statistics.quantiles(routed, n=10)[-1]:7.2f} ms")
    print(f"direct spawn on B:                     median {d:7.2f} ms  p90 {statistics.quantiles(direct, n=10)[-1]:7.2f} ms")
    ratio = r / d
    print(f"ratio routed/direct: {ratio:.2f}  (target <= 1.5: {'PASS' if ratio <= 1.5 else 'MISS'})")


if __name__ == "__main__":
    main()
