"""`policy explain --live --cpu N --mem MB` shows the decision a spawn gets: same resource rejection, same ranking.

A real three-node cluster (real serf, agents over mutual TLS), each node with
two cores. Two one-core spawns fill the cheapest node; the explain of a third
one-core spawn, run as a user runs it (the CLI as a process, the user's token
and the cluster CA from the environment), rejects that node with the reason a
spawn gets, and the spawn that follows is decided the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypercore.devcluster import Cluster, Node

ROOT = Path(__file__).resolve().parents[2]
COST_FILE = ROOT / "examples" / "policies" / "cost-optimized.json"
COST = json.loads(COST_FILE.read_text())
EXEC_ONLY = ("--enable-exec", "--disable-containers", "--capacity-cpu", "2")
REASON = "insufficient cpu (free 0 of 2, asks 1)"


def explain(cluster: Cluster, node: Node, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cluster.client_env(node)}  # PYTHONPATH too: the agent code under test
    if not token:
        env.pop("HYPERCORE_TOKEN")
    return subprocess.run([sys.executable, "-m", "hypercore.cli", "policy", "explain", str(COST_FILE), "--live", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def spawn(node: Node) -> dict[str, Any]:
    r = node.post("/v1/workloads", {"spec": {"command": "sleep 120", "cpu": 1, "mem": 64}, "policy": COST})
    assert r.status_code == 201, r.text
    return r.json()


def test_explain_of_a_spawn_shows_the_spawn_s_resource_rejection_and_ranking(cluster: Cluster) -> None:
    cluster.add("node1", *EXEC_ONLY, "--beacon-price", "0.03")
    cluster.add("node2", *EXEC_ONLY, "--beacon-price", "0.02")
    cluster.add("node3", *EXEC_ONLY, "--beacon-price", "0.01")
    cluster.wait_converged()
    origin = cluster["node1"]
    assert [spawn(origin)["node"] for _ in range(2)] == ["node3", "node3"]  # the cheapest, until it is full

    r = explain(cluster, origin, "--cpu", "1", "--mem", "64", "--json")
    assert r.returncode == 0, r.stderr
    explained = json.loads(r.stdout)
    assert [x["node"] for x in explained["ranked"]] == ["node2", "node1"]
    assert {x["node"]: x["reasons"] for x in explained["rejected"]} == {"node3": [REASON]}
    assert "1 insufficient cpu" in explained["summary"]

    human = explain(cluster, origin, "--cpu", "1", "--mem", "64", "--limit", "1")
    assert human.returncode == 0, human.stderr
    assert REASON in human.stdout and "node2" in human.stdout and "... and 1 more ranked nodes" in human.stdout

    third = spawn(origin)  # decided as explained, placed with one attempt
    assert third["node"] == "node2" and [(a["node"], a["outcome"]) for a in third["attempts"]] == [("node2", "ok")]
    assert [x["node"] for x in third["decision"]["ranked"]] == [x["node"] for x in explained["ranked"]]
    assert third["decision"]["rejected"] == explained["rejected"]

    # Without a token the agent cannot be asked for a spawn's decision: a clear usage error, no traceback.
    refused = explain(cluster, origin, "--cpu", "1", token=False)
    assert refused.returncode == 2 and "give a user token with --token or HYPERCORE_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr
