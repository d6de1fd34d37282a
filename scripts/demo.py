"""`make demo`: the main job of hypercore, end to end on this machine.

1. Explain how every example policy ranks the sample cluster (no processes).
2. Start a real three-node cluster on loopback (serf + agents) with different
   prices and reputations, spawn a workload under each example policy, print
   where each landed and why, show `cluster metrics`, and shut down cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from hypercore.devcluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "examples" / "policies").glob("*.json"))
SAMPLE = ROOT / "examples" / "clusters" / "sample.json"


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


if __name__ == "__main__":
    explain_sample()
    live_cluster()
