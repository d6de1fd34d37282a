"""Paging of the nodes view: GET /v1/nodes?limit=&after= and `hypercore cluster metrics --limit/--after`.

Real agents (serf, HTTPS with the cluster CA, a user token) — the module's `trio` of
tests/cluster/conftest.py: cheap, mid, trusted. Paging is by name, with the name as the cursor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hypercore.devcluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


def names(body: dict[str, Any]) -> list[str]:
    return [n["name"] for n in body["nodes"]]


def test_nodes_page_by_name_with_a_total_and_a_cursor(trio: Cluster) -> None:
    node = trio["mid"]
    whole = node.get("/v1/nodes").json()
    assert names(whole) == ["cheap", "mid", "trusted"] and whole["total"] == 3 and whole["next"] is None

    first = node.get("/v1/nodes", params={"limit": 2}).json()
    assert names(first) == ["cheap", "mid"] and first["total"] == 3 and first["next"] == "mid"
    second = node.get("/v1/nodes", params={"limit": 2, "after": first["next"]}).json()
    assert names(second) == ["trusted"] and second["total"] == 3 and second["next"] is None
    # A page holds the same records as the whole answer (links measured from the node asked).
    assert {n["name"]: n["link_source"] for n in first["nodes"] + second["nodes"]} == \
        {n["name"]: n["link_source"] for n in whole["nodes"]}

    # The cursor is a name, not an offset: one that is no member still finds its place.
    assert names(node.get("/v1/nodes", params={"after": "d"}).json()) == ["mid", "trusted"]
    assert node.get("/v1/nodes", params={"after": "trusted"}).json() == {
        "origin": "mid", "nodes": [], "total": 3, "next": None}
    # An exact fit has no next page.
    assert node.get("/v1/nodes", params={"limit": 3}).json()["next"] is None


def test_a_page_keeps_near(trio: Cluster) -> None:
    body = trio["mid"].get("/v1/nodes", params={"near": "trusted", "limit": 1, "after": "mid"}).json()
    assert body["origin"] == "trusted" and names(body) == ["trusted"]
    assert body["nodes"][0]["latency_ms"] == 0.0 and body["nodes"][0]["link_source"] == "self"


@pytest.mark.parametrize(("params", "says"), [
    ({"limit": "0"}, "limit: '0' is not allowed (a whole number from 1 to 10,000)"),
    ({"limit": "10001"}, "limit: '10001' is not allowed"),
    ({"limit": "-1"}, "limit: '-1' is not allowed"),
    ({"limit": "two"}, "limit: 'two' is not allowed"),
    ({"limit": "1e3"}, "limit: '1e3' is not allowed"),
    ({"after": ""}, "after: a cursor of 0 characters is not allowed (1 to 253"),
    ({"after": "x" * 300}, "after: a cursor of 300 characters is not allowed"),
])
def test_bad_paging_parameters_are_refused_by_name(trio: Cluster, params: dict[str, str], says: str) -> None:
    r = trio["cheap"].get("/v1/nodes", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request" and says in r.json()["error"]["message"], r.text


def hypercore(trio: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **trio.client_env(trio["cheap"])}
    return subprocess.run([sys.executable, "-m", "hypercore.cli", "cluster", "metrics", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_cluster_metrics_pages(trio: Cluster) -> None:
    first = hypercore(trio, "--limit", "2")
    assert first.returncode == 0, first.stderr
    blocks = [line for line in first.stdout.splitlines() if line.startswith("Node: ")]
    assert blocks == ["Node: cheap (alive)", "Node: mid (alive)"]
    assert first.stdout.rstrip().endswith("2 of 3 nodes shown; next page: --after mid")

    last = hypercore(trio, "--limit", "2", "--after", "mid")
    assert last.returncode == 0, last.stderr
    assert [line for line in last.stdout.splitlines() if line.startswith("Node: ")] == ["Node: trusted (alive)"]
    assert last.stdout.rstrip().endswith("1 of 3 nodes shown; no more")

    snapshot = json.loads(hypercore(trio, "--json", "--limit", "1").stdout)
    assert [n["name"] for n in snapshot["nodes"]] == ["cheap"] and snapshot["total"] == 3 and snapshot["next"] == "cheap"

    everything = hypercore(trio)  # no paging flags: every node, no paging line
    assert everything.returncode == 0 and everything.stdout.count("Node: ") == 3 and "nodes shown" not in everything.stdout


@pytest.mark.parametrize(("args", "says"), [
    (("--limit", "0"), "Invalid value for '--limit': 0 is not in the range 1<=x<=10000."),
    (("--after", ""), "after: a cursor of 0 characters is not allowed"),
])
def test_cluster_metrics_refuses_bad_paging_flags(trio: Cluster, args: tuple[str, ...], says: str) -> None:
    result = hypercore(trio, *args)
    assert result.returncode != 0 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def local_listings_sent(node: Any) -> float:
    for family in text_string_to_metric_families(node.get("/metrics").text):
        if family.name == "hypercore_node_requests":
            return sum(s.value for s in family.samples
                       if s.name.endswith("_total") and s.labels["route"] == "GET /v1/local/workloads")
    return 0.0


def test_a_metrics_page_counts_its_own_nodes_workloads_without_listing_every_node(trio: Cluster) -> None:
    cost = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
    spawned = trio["cheap"].post("/v1/workloads", {"spec": {"command": "sleep 300", "cpu": 0.1}, "policy": cost})
    assert spawned.status_code == 201 and spawned.json()["node"] == "cheap", spawned.text
    try:
        before = local_listings_sent(trio["cheap"])
        page = json.loads(hypercore(trio, "--json", "--limit", "1").stdout)
        assert [(n["name"], n["workloads"]) for n in page["nodes"]] == [("cheap", 1)]
        assert local_listings_sent(trio["cheap"]) - before == 1  # its own listing, not one of each node's
        rest = json.loads(hypercore(trio, "--json", "--limit", "2", "--after", "cheap").stdout)
        assert [(n["name"], n["workloads"]) for n in rest["nodes"]] == [("mid", 0), ("trusted", 0)]
        whole = json.loads(hypercore(trio, "--json").stdout)  # no page: the whole listing, as before
        assert {n["name"]: n["workloads"] for n in whole["nodes"]} == {"cheap": 1, "mid": 0, "trusted": 0}
    finally:
        trio["cheap"].delete(f"/v1/workloads/{spawned.json()['id']}")
