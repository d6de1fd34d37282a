"""Spawn latency on a real two-node cluster on loopback.

exec case (issue: routed/direct ratio ≤ 1.5):
  routed: POST /v1/workloads to node A; the policy places it on node B (A has
          no exec driver), so the request pays for A's decision and the A→B hop.
  direct: POST /v1/workloads to node B itself, which places it on B: the same
          spawn a user makes, submitted to the node that runs it.
  bare:   POST /v1/local/workloads to B (the node-local endpoint A calls; no
          decision at all), shown for reference.
  All run `true` and return once B has started it.
container case (target: overhead ≤ 10 % of the engine's own start time):
  routed: POST /v1/workloads to A, placed on B, answered once Podman reports
          the container started;
  engine: the same `podman run -d` argv run directly, with no hypercore at all.
  overhead = routed - engine (placement, HTTP, SQLite bookkeeping).
first-output case (--vm-runs, issue 14): median time from the spawn request (to A)
  to the workload's first output in `logs`, for `echo started` as exec, as a
  container and as a microVM (node v, --enable-vm; the accelerator used is printed).
Medians of interleaved runs.
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` module, since
# Python puts this script's directory first on sys.path: drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from hypercore.devcluster import Cluster

SPEC = {"command": "true", "cpu": 0.01, "mem": 1}  # tiny: back-to-back spawns must not fill the node's capacity


def timed(client: httpx.Client, url: str, body: dict) -> float:
    start = time.perf_counter()
    r = client.post(url, json=body)
    elapsed = (time.perf_counter() - start) * 1000
    if r.status_code != 201:
        sys.exit(f"spawn failed: HTTP {r.status_code} {r.text}")
    return elapsed


def container_case(runs: int, a_url: str, client: httpx.Client, tmp: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hypercore.runtime.oci import OCIDriver
    from hypercore.workload import WorkloadSpec
    from tests.runtime.oci_image import ensure_test_image

    engine = shutil.which("podman")
    if engine is None:
        print("container case: skipped (podman not installed)")
        return
    image = ensure_test_image(engine)
    spec = {"image_ref": image, "args": ["echo", "started"], "cpu": 1, "mem": 64}
    driver = OCIDriver(engine, node_name="bench-direct")
    routed, direct, names = [], [], []
    try:
        for i in range(runs + 2):
            r = timed(client, f"{a_url}/v1/workloads", {"spec": spec})
            wid = str(uuid.uuid4())
            argv = [engine, *driver.run_argv(wid, WorkloadSpec(**spec), tmp / f"{wid}.log")]
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            d = (time.perf_counter() - start) * 1000
            names.append(f"hc-{wid}")
            if i >= 2:  # warm-up
                routed.append(r)
                direct.append(d)
    finally:
        subprocess.run([engine, "rm", "-f", "--time", "0", *names], capture_output=True)
    r, d = statistics.median(routed), statistics.median(direct)
    print(f"container routed spawn to running (A places on B): median {r:7.1f} ms")
    print(f"podman run -d of the same container, directly:     median {d:7.1f} ms")
    share = (r - d) / d
    print(f"overhead outside the engine: {r - d:.1f} ms = {share:.1%} of the engine's start time  "
          f"(target <= 10%: {'PASS' if share <= 0.10 else 'MISS'})")


def first_output(client: httpx.Client, url: str, spec: dict) -> float:
    """ms from the spawn request to the first byte of the workload's log (polled every 10 ms)."""
    start = time.perf_counter()
    r = client.post(f"{url}/v1/workloads", json={"spec": spec})
    if r.status_code != 201:
        sys.exit(f"spawn failed: HTTP {r.status_code} {r.text}")
    wid = r.json()["id"]
    while time.perf_counter() - start < 120:
        if client.get(f"{url}/v1/workloads/{wid}/logs").content.strip():
            return (time.perf_counter() - start) * 1000
        time.sleep(0.01)
    sys.exit(f"workload {wid} printed nothing within 120 s")


def first_output_case(runs: int, cluster: Cluster, a_url: str, client: httpx.Client) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.runtime.oci_image import ensure_test_image

    engine = shutil.which("podman")
    if engine is None or shutil.which("qemu-system-x86_64") is None:
        print("first-output case: skipped (needs podman and qemu-system-x86)")
        return
    image = ensure_test_image(engine)
    v = cluster.add("v", "--enable-vm", "--disable-containers", "--spawn-rate", "1000", "--spawn-burst", "1000",
                    "--capacity-cpu", "1000", "--capacity-mem", "1000000")
    cluster.wait_converged()
    accel = "kvm" if "vm-kvm" in (v.nodes().get("v", {}).get("capabilities") or []) else "tcg"
    cases = {"exec": {"command": "echo started", "cpu": 0.01, "mem": 1},
             "container": {"image_ref": image, "args": ["echo", "started"], "cpu": 0.01, "mem": 64},
             f"vm ({accel})": {"image_ref": image, "runtime": "vm", "args": ["echo", "started"], "cpu": 1, "mem": 128}}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(runs + 1):
        for name, spec in cases.items():
            t = first_output(client, a_url, spec)
            if i:  # the first round warms up (a VM's root disk is built then)
                times[name].append(t)
    print(f"first-output case: {runs} runs each, interleaved; `echo started`, spawned on A, placed elsewhere")
    for name, xs in times.items():
        print(f"  {name:<10} spawn request to first output: median {statistics.median(xs):8.1f} ms  "
              f"(min {min(xs):.1f}, max {max(xs):.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--container-runs", type=int, default=20)
    parser.add_argument("--vm-runs", type=int, default=5, help="runs of the first-output case (0: skip it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hypercore-bench-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            a = cluster.add("a", "--disable-containers", "--spawn-rate", "1000", "--spawn-burst", "1000")
            # Raised limits: this measures the path of one spawn, not admission control.
            b = cluster.add("b", "--enable-exec", "--spawn-rate", "1000", "--spawn-burst", "1000", "--capacity-cpu", "1000")
            cluster.wait_converged()
            headers = {"Authorization": f"Bearer {cluster.token}"}
            # Users speak HTTPS with a token; the bare node-local call needs a node certificate (mutual TLS).
            with httpx.Client(headers=headers, timeout=30, verify=cluster.pki.verify()) as client, \
                    httpx.Client(timeout=30, verify=cluster.pki.node_verify()) as node_client:
                routed_url, direct_url = f"{a.url}/v1/workloads", f"{b.url}/v1/local/workloads"
                for _ in range(5):  # warm up connections and code paths
                    timed(client, routed_url, {"spec": SPEC})
                    timed(node_client, direct_url, {"id": str(uuid.uuid4()), "spec": SPEC})
                user_direct_url = f"{b.url}/v1/workloads"
                routed, direct, bare = [], [], []
                for _ in range(args.runs):
                    routed.append(timed(client, routed_url, {"spec": SPEC}))
                    direct.append(timed(client, user_direct_url, {"spec": SPEC}))
                    bare.append(timed(node_client, direct_url, {"id": str(uuid.uuid4()), "spec": SPEC}))
                report_exec(args.runs, routed, direct, bare)
                if args.container_runs:
                    container_case(args.container_runs, a.url, client, Path(tmp))
                if args.vm_runs:
                    first_output_case(args.vm_runs, cluster, a.url, client)
        finally:
            cluster.close()


def report_exec(runs: int, routed: list[float], direct: list[float], bare: list[float]) -> None:
    r, d, b = statistics.median(routed), statistics.median(direct), statistics.median(bare)
    p90 = lambda xs: statistics.quantiles(xs, n=10)[-1]  # noqa: E731
    print(f"exec case: {runs} runs each, interleaved; workload: {SPEC['command']!r} on node b")
    print(f"routed spawn (submitted to A, placed on B):  median {r:7.2f} ms  p90 {p90(routed):7.2f} ms")
    print(f"direct spawn (submitted to B, placed on B):  median {d:7.2f} ms  p90 {p90(direct):7.2f} ms")
    print(f"bare node-local start on B (no decision):    median {b:7.2f} ms  p90 {p90(bare):7.2f} ms")
    ratio = r / d
    print(f"ratio routed/direct: {ratio:.2f}  (target <= 1.5: {'PASS' if ratio <= 1.5 else 'MISS'});"
          f"  routed/bare: {r / b:.2f}")


if __name__ == "__main__":
    main()
