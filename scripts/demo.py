"""`make demo`: the main job of hypercore, end to end on this machine.

1. Explain how every example policy ranks the sample cluster (no processes).
2. Start a real three-node cluster on loopback (serf + agents) with different
   prices and reputations, spawn a workload under each example policy, print
   where each landed and why, show `cluster metrics`, and shut down cleanly.
3. (root only) The geo test-bed: `hypercore dev up` on
   examples/topologies/three-regions.json, each node in its own network
   namespace behind a WAN emulator; the same low-latency spawn asked in `eu`
   and in `ap` lands in each one's own region, and `policy explain --live`
   shows why. Then SIGTERM, which removes every process and namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypercore.devcluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "examples" / "policies").glob("*.json"))
SAMPLE = ROOT / "examples" / "clusters" / "sample.json"
TOPOLOGY = ROOT / "examples" / "topologies" / "three-regions.json"


def hypercore(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hypercore.cli", *args], text=True, capture_output=True, env=env)


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def explain_sample() -> None:
    banner(f"1. every example policy on {SAMPLE.relative_to(ROOT)}")
    for policy in POLICIES:
        result = hypercore("policy", "explain", str(policy), "--nodes", str(SAMPLE), "--limit", "3")
        print(result.stdout.rstrip())
        if result.returncode not in (0, 3):
            raise SystemExit(f"policy explain failed: {result.stderr}")


def live_cluster() -> None:
    banner("2. a live three-node cluster on loopback")
    with tempfile.TemporaryDirectory(prefix="hypercore-demo-") as tmp:
        cluster = Cluster(Path(tmp))
        pki = cluster.pki.dir
        print(f"cluster credentials in {pki} (what `hypercore tls ca create`, `hypercore tls cert create`,")
        print("`hypercore keygen` and `hypercore token create` make): a CA, one certificate per node, an")
        print(f"encrypted-gossip key and a user token for '{cluster.token_user}'. Every call below is mutual TLS.")
        try:
            specs = [("budget", "0.006", "0.70"), ("standard", "0.020", "0.93"), ("premium", "0.045", "0.99")]
            for name, price, reputation in specs:
                node = cluster.add(name, "--enable-exec", "--beacon-price", price, "--beacon-reputation", reputation)
                print(f"started node {name:<9} price ${price}/GB  reputation {reputation}  api {node.url}  "
                      f"cert {node.name}.pem")
            print("waiting for gossip and the first beacon measurements ...")
            cluster.wait_converged()
            entry = cluster["standard"]
            env = {**cluster.client_env(entry), "PATH": "/usr/bin:/bin"}
            banner("spawning one workload per example policy (through node 'standard')")
            for policy in POLICIES:
                result = hypercore("cluster", "spawn", "--command", "echo hello from $HYPERCORE_WORKLOAD_ID; sleep 60",
                                   "--cpu", "0.25", "--policy", str(policy), "--json", env=env)
                if result.returncode != 0:
                    print(f"{policy.stem:<15} -> no placement: {result.stderr.strip()}")
                    continue
                out = json.loads(result.stdout)
                ranked = ", ".join(f"{r['node']} {r['score']:.3f}" for r in out["decision"]["ranked"])
                print(f"{policy.stem:<15} -> {out['node']:<9} ranking: {ranked}")
                print(f"{'':<18} {out['decision']['summary']}")
            vm_workload(cluster, env)
            banner("hypercore cluster list")
            print(hypercore("cluster", "list", env=env).stdout.rstrip())
            banner("hypercore cluster metrics")
            print(hypercore("cluster", "metrics", env=env).stdout.rstrip())
            # A spawn is placed by its request id's owner node, so the decisions
            # are spread over the nodes' logs: gather them in time order.
            banner("decision logs of all nodes")
            lines = [f"[{node.name}] {line}" for node in cluster.nodes.values() for line in node.log().splitlines()
                     if "policy-based node selection" in line or "spawn" in line]
            for line in sorted(lines, key=lambda l: l.split("time=", 1)[1][:24]):
                print(line)
        finally:
            banner("shutting down (SIGTERM: leave the cluster gracefully)")
            cluster.close()
            print("all nodes stopped")


def vm_workload(cluster: Cluster, env: dict[str, str]) -> None:
    """One image booted as its own microVM on a fourth node (--enable-vm), when this machine can run one."""
    import shutil

    banner("a workload in its own microVM (--runtime vm)")
    engine, qemu = shutil.which("podman"), shutil.which("qemu-system-x86_64")
    if engine is None or qemu is None:
        print(f"skipped: this machine cannot run one ({'podman' if engine is None else 'qemu-system-x86'} is not "
              "installed; `make system-deps` installs it)")
        return
    sys.path.insert(0, str(ROOT))
    from tests.runtime.oci_image import ensure_test_image  # a local busybox image: nothing is pulled

    image = ensure_test_image(engine)
    try:
        cluster.add("isolated", "--enable-vm", "--disable-containers", "--beacon-price", "0.030")
        cluster.wait_converged()
    except AssertionError:
        print("skipped: the node could not offer VMs:", cluster["isolated"].log().strip().splitlines()[-1:])
        return
    caps = cluster["isolated"].nodes().get("isolated", {}).get("capabilities") or []
    print(f"node isolated offers {', '.join(caps)} ({'KVM' if 'vm-kvm' in caps else 'TCG, software emulation: slow'})")
    # Through the API, as `cluster spawn --image-ref IMG --runtime vm --mem 128` does, with args (the CLI has none).
    r = cluster["standard"].post("/v1/workloads", {"spec": {
        "image_ref": image, "runtime": "vm", "mem": 128,
        "args": ["sh", "-c", "echo kernel $(cat /proc/sys/kernel/osrelease) in the guest; head -1 /proc/meminfo"]}})
    if r.status_code != 201:
        print(f"no placement: {r.text}")
        return
    wid, node = r.json()["id"], r.json()["node"]
    print(f"spawned {wid} on {node}: {image} booted with -m 128 (host kernel: {os.uname().release})")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and cluster[node].get(f"/v1/workloads/{wid}").json().get("state") == "running":
        time.sleep(0.5)
    print(f"$ hypercore cluster logs --id {wid[:8]}...")
    print(hypercore("cluster", "logs", "--id", wid, env=env).stdout.rstrip())


def geo_testbed() -> None:
    banner(f"3. the geo test-bed: {TOPOLOGY.relative_to(ROOT)}")
    if os.geteuid() != 0:
        print("skipped: the geo test-bed needs root (network namespaces, TUN devices); run `make demo` as root")
        return
    with tempfile.TemporaryDirectory(prefix="hypercore-geo-demo-") as tmp:
        state_file = Path(tmp) / "state.json"
        print(f"hypercore dev up --topology {TOPOLOGY.relative_to(ROOT)} --state-file {state_file}")
        print("(RTT eu-us 80 ms, eu-ap 160 ms, us-ap 120 ms, 2 ms inside a region, 1 % loss on ap's links; "
              "eu-1, us-1 and ap-1 run nothing themselves)")
        up = subprocess.Popen([sys.executable, "-m", "hypercore.cli", "dev", "up", "--topology", str(TOPOLOGY),
                               "--state-file", str(state_file), "--dir", str(Path(tmp) / "bed")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 150
            while not state_file.exists():
                if up.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"hypercore dev up failed:\n{up.communicate(timeout=30)[0] if up.poll() else ''}")
                time.sleep(0.5)
            assert up.stdout is not None
            print(up.stdout.readline().rstrip())
            state = json.loads(state_file.read_text())
            region = {n["name"]: n["region"] for n in state["nodes"]}

            def env(node: str) -> dict[str, str]:
                api = next(n["api"] for n in state["nodes"] if n["name"] == node)
                return {**os.environ, "HYPERCORE_ADDR": api, "HYPERCORE_TOKEN": state["token"],
                        "HYPERCORE_CACERT": state["ca_file"]}

            metrics = json.loads(hypercore("cluster", "metrics", "--json", env=env("us-1")).stdout)["nodes"]
            print("latency as us-1 measures it: " + ", ".join(
                f"{n['name']} {n['latency_ms']:.0f} ms" for n in metrics if n["name"] != "us-1"))
            low_latency = ROOT / "examples" / "policies" / "low-latency.json"
            for asked in ("eu-1", "ap-1"):
                banner(f"low-latency spawn asked at {asked} (region {region[asked]})")
                result = hypercore("cluster", "spawn", "--command", "sleep 60", "--cpu", "0.1", "--mem", "16",
                                   "--policy", str(low_latency), "--json", env=env(asked))
                if result.returncode != 0:
                    print(f"no placement: {result.stderr.strip()}")
                    continue
                node = json.loads(result.stdout)["node"]
                print(f"-> landed on {node} (region {region[node]}); why, as `policy explain --live` at {asked} says")
                print(f"   (explain takes no workload: {asked} itself ranks first at 0 ms, but it runs no exec; the "
                      "nodes of its region come next, the others are farther or over 100 ms):")
                print(hypercore("policy", "explain", str(low_latency), "--live", "--limit", "4",
                                env={**env(asked), "COLUMNS": "120"}).stdout.rstrip())
            cost = ROOT / "examples" / "policies" / "cost-optimized.json"
            result = hypercore("cluster", "spawn", "--command", "sleep 60", "--cpu", "0.1", "--mem", "16",
                               "--policy", str(cost), "--json", env=env("eu-1"))
            if result.returncode == 0:
                node = json.loads(result.stdout)["node"]
                print(f"\nthe same spawn at eu-1 under cost-optimized -> {node} (region {region[node]}): the cheapest "
                      "node, 160 ms away, is within its 500 ms limit")
        finally:
            banner("stopping the geo test-bed (SIGTERM)")
            if up.poll() is None:
                up.send_signal(signal.SIGTERM)
            rest = up.communicate(timeout=120)[0]
            print(rest.strip().splitlines()[-1] if rest.strip() else f"dev up exited {up.returncode}")


if __name__ == "__main__":
    explain_sample()
    live_cluster()
    geo_testbed()
