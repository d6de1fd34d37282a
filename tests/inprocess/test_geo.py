"""Latency is measured from where the work is asked for: three regions, one low-latency policy, three answers.

Positions stand in for Serf's Vivaldi coordinates (the harness puts them in
every node's coordinate book): RTT eu–us 80 ms, eu–ap 160 ms, us–ap 120 ms,
about 1–2 ms inside a region. The nodes asked run nothing themselves (no free
CPU), so each placement is a choice among the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypercore.policy import load_policy_file
from hypercore.workload import WorkloadSpec
from tests.inprocess.conftest import NODES
from tests.inprocess.harness import FakeCluster

ROOT = Path(__file__).resolve().parents[2]
LOW_LATENCY = load_policy_file(ROOT / "examples" / "policies" / "low-latency.json")
SPEC = WorkloadSpec(command="sleep 60", cpu=0.5)
@pytest.mark.parametrize("asked_at, region", [("eu-1", "eu"), ("us-1", "us"), ("ap-1", "ap")])
async def test_a_low_latency_spawn_lands_in_the_region_it_was_asked_from(geo: FakeCluster, asked_at: str,
                                                                          region: str) -> None:
    placement = await geo[asked_at].scheduler.place(SPEC, LOW_LATENCY)
    assert NODES[placement.node] == region, [(r.node, r.components) for r in placement.decision.ranked]
    rejected = {r.node: r.reasons for r in placement.decision.rejected}
    far = [n for n, r in NODES.items() if r != region and not n.endswith("-1")]
    assert far and all("latency_ms > 100" in " ".join(rejected.get(n, ())) or n in
                       [r.node for r in placement.decision.ranked] for n in far)


async def test_the_api_shows_latency_from_the_node_asked_and_from_near(geo: FakeCluster) -> None:
    async with geo.client("us-1", geo.token("alice")) as client:
        nodes = {n["name"]: n for n in (await client.get("/v1/nodes")).json()["nodes"]}
        for name, region in NODES.items():
            if region == "eu":
                assert 60 <= nodes[name]["latency_ms"] <= 100, (name, nodes[name]["latency_ms"])
                assert nodes[name]["link_source"] == "probes"  # us-1 measured them itself
        assert nodes["us-1"]["latency_ms"] == 0 and nodes["us-1"]["link_source"] == "self"
        assert {name: n["region"] for name, n in nodes.items()} == NODES  # from each node's signed beacon
        from_ap = {n["name"]: n for n in (await client.get("/v1/nodes", params={"near": "ap-1"})).json()["nodes"]}
        assert from_ap["ap-2"]["latency_ms"] < 5 and 140 <= from_ap["eu-2"]["latency_ms"] <= 180
        assert from_ap["eu-2"]["link_source"] == "probes+coordinates"  # latency from coordinates, jitter from probes
        assert (await client.get("/v1/nodes", params={"near": "mars-1"})).status_code == 422
        # A spawn asked at us-1 but `near` ap-1 is placed as if asked in ap.
        r = await client.post("/v1/workloads", json={"spec": SPEC.model_dump(), "policy": LOW_LATENCY.model_dump(),
                                                     "near": "ap-1"})
        assert r.status_code == 201 and NODES[r.json()["node"]] == "ap", r.text


async def test_a_node_claiming_low_latency_gains_nothing(geo: FakeCluster) -> None:
    # ap-2 says in its beacon that its latency is 0.1 ms; from eu it is 160 ms away, and that is what counts.
    decision = geo["eu-1"].scheduler.decide(SPEC, LOW_LATENCY)
    assert "ap-2" not in [r.node for r in decision.ranked]
    assert any(reason.startswith("latency_ms > 100") for reason in dict(
        (r.node, r.reasons) for r in decision.rejected)["ap-2"])
