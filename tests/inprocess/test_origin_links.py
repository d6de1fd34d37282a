"""A forwarded spawn brings the asking node's own measurements: its owner's coordinates are only an estimate.

Found on the geo test-bed: a spawn is ranked by its request id's owner, which
estimated the asking node's latencies from Serf's coordinates alone; before
they settle (tens of seconds after a start), a low-latency spawn asked in `us`
was placed in `eu`. The asking node has measured its peers directly, so it sends
those figures along and the owner uses them first. Here the owner's coordinate
of the asking node is wrong on purpose (as an unsettled one is), which fails on
the code before this change. The rest of the cluster is as in test_geo.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypercore.identity.tokens import User
from hypercore.membership.rpc import Coordinate
from hypercore.placement import request_rank, user_request_id
from hypercore.policy import load_policy_file
from hypercore.workload import WorkloadSpec
from tests.inprocess.harness import FakeCluster
from tests.inprocess.conftest import NODES

ROOT = Path(__file__).resolve().parents[2]
LOW_LATENCY = load_policy_file(ROOT / "examples" / "policies" / "low-latency.json")
SPEC = WorkloadSpec(command="sleep 60", cpu=0.5)


def request_owned_by_eu(user: str) -> tuple[str, str]:
    for i in range(1000):
        rid = f"req-{i}"
        owner = request_rank(user_request_id(user, rid), NODES)[0]
        if NODES[owner] == "eu" and owner != "eu-1":
            return rid, owner
    raise AssertionError("no request id owned by an eu node")


async def test_the_owner_ranks_with_the_asking_nodes_own_probes(geo: FakeCluster) -> None:
    rid, owner = request_owned_by_eu("alice")
    # The owner's coordinate of ap-1 has not settled: it puts ap-1 in the middle of eu.
    geo[owner].coordinates.set("ap-1", Coordinate(vec=[0.0, 0.0], error=1.5, adjustment=0.0, height=0.0005))
    async with geo.client("ap-1", geo.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC.model_dump(), "policy": LOW_LATENCY.model_dump(),
                                                     "request_id": rid})
    assert r.status_code == 201, r.text
    body = r.json()
    assert NODES[body["node"]] == "ap", body["decision"]["ranked"]
    ranked = {n["node"]: n for n in body["decision"]["ranked"]}
    assert body["node"] in ranked
    # Decided by the owner, with what ap-1 measured: the eu nodes are over low-latency's 100 ms from ap-1.
    rejected = {n["node"]: n["reasons"] for n in body["decision"]["rejected"]}
    assert any(reason.startswith("latency_ms > 100") for reason in rejected["eu-2"]), rejected
    assert geo[owner].links.link("ap-1", "eu-2").source == "probes of ap-1"


async def test_figures_count_only_from_the_node_they_describe(geo: FakeCluster) -> None:
    rid, owner = request_owned_by_eu("alice")
    # us-1 sends a spawn "near ap-1" with figures that would put eu next to ap-1: they are not us-1's to give.
    body = {"spec": SPEC.model_dump(), "policy": LOW_LATENCY.model_dump(), "request_id": rid, "near": "ap-1",
            "origin_links": {"eu-2": [0.5, 0.0, 0.0], "eu-3": [0.5, 0.0, 0.0]}}
    r = await geo["us-1"].transport.request(owner, "POST", "/v1/local/spawn", json_body=body,
                                            user=User("alice", management=False))
    assert r.status == 201, r.text
    assert geo[owner].links.link("ap-1", "eu-2").source != "probes of ap-1"
    assert NODES[r.json()["node"]] == "ap"
    # A user cannot send figures at all: they travel only node to node.
    async with geo.client("ap-1", geo.token("alice")) as client:
        r = await client.post("/v1/workloads", json={**body, "request_id": rid + "-user"})
    assert r.status_code == 422 and "origin_links" in r.text, r.text


@pytest.mark.parametrize("figures", [{"x": [1.0, 2.0]}, {"x": [-1.0, 0.0, 0.0]}, {"x": ["1", 0, 0]},
                                     {f"n{i}": [1.0, 0.0, 0.0] for i in range(257)}])
async def test_malformed_figures_are_refused_with_422(geo: FakeCluster, figures: dict) -> None:
    body = {"spec": SPEC.model_dump(), "request_id": "r-1", "near": "us-1", "origin_links": figures}
    r = await geo["us-1"].transport.request("eu-2", "POST", "/v1/local/spawn", json_body=body,
                                            user=User("alice", management=False))
    assert r.status == 422, r.text
