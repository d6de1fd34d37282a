"""Issue 12, fast: the console's files at /ui/ with their security headers, and who may read /v1/decisions.

In-process (tests/inprocess/harness.py): real Nodes and apps, no sockets, no browser.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from hypercore.api.console import UI_DIR
from hypercore.membership.rpc_types import Coordinate
from hypercore.placement.scheduler import DECISIONS_KEPT
from hypercore.workload import WorkloadSpec
from tests.inprocess.harness import FakeCluster

SPEC = {"command": "sleep 60", "cpu": 0.1}
TOO_CHEAP = {"name": "too-cheap", "mode": "enforce", "max_price_per_gb": 0.001}


@pytest_asyncio.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(tmp_path)
    try:
        yield cluster
    finally:
        await cluster.close()


def assert_secured(headers: object) -> None:
    csp = headers["content-security-policy"]  # type: ignore[index]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert headers["x-content-type-options"] == "nosniff"  # type: ignore[index]
    assert headers["x-frame-options"] == "DENY"  # type: ignore[index]


async def test_ui_serves_its_files_with_security_headers(fake: FakeCluster) -> None:
    fake.add("a")
    async with fake.client("a", None) as client:
        index = await client.get("/ui/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert_secured(index.headers)
        # Everything the page loads is its own: relative paths, no other origin, no inline script or style.
        html = index.text
        assert '<script type="module" src="app.js"></script>' in html
        assert not re.search(r"(src|href)=\"(https?:)?//", html) and "<style" not in html and " style=" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        for name in ("app.js", "api.js", "dom.js", "map.js", "nodes.js", "workloads.js", "decisions.js", "playground.js",
                     "explain.js", "style.css", "favicon.svg"):
            r = await client.get(f"/ui/{name}")
            assert r.status_code == 200, name
            assert r.content == (UI_DIR / name).read_bytes()
            assert_secured(r.headers)
        assert (await client.get("/ui/app.js")).headers["content-type"].startswith(("text/javascript",
                                                                                      "application/javascript"))
        assert (await client.get("/ui/style.css")).headers["content-type"].startswith("text/css")
        # Errors and redirects carry the headers too; nothing outside ui/ is served.
        missing = await client.get("/ui/nope.js")
        assert missing.status_code == 404
        assert_secured(missing.headers)
        assert (await client.get("/ui/../console.py")).status_code == 404
        bare = await client.get("/ui", follow_redirects=False)
        assert bare.status_code in (301, 307) and bare.headers["location"].endswith("/ui/")
        # The API itself is not framed by the console's policy.
        assert "content-security-policy" not in (await client.get("/v1/nodes")).headers


async def test_no_api_string_is_inserted_as_html() -> None:
    # Node names and workload commands are attacker-controlled: the scripts build the page with
    # textContent / createTextNode / setAttribute only.
    for path in UI_DIR.glob("*.js"):
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "DOMParser", "createContextualFragment"):
            assert sink not in text, f"{path.name} uses {sink}"


async def test_decisions_need_a_token_and_show_each_user_their_own(fake: FakeCluster) -> None:
    fake.add("a", price=0.03)
    fake.add("b", price=0.01)
    alice, bob, ops = fake.token("alice"), fake.token("bob"), fake.token("ops", management=True)
    async with fake.client("a", None) as anonymous:
        r = await anonymous.get("/v1/decisions")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        # The node-only twin refuses a user token: only a node of the cluster asks it.
        anonymous.headers["Authorization"] = f"Bearer {alice}"
        assert (await anonymous.get("/v1/local/decisions")).status_code == 403

    async with fake.client("a", alice) as client:
        assert (await client.get("/v1/decisions")).json() == {"decisions": [], "unreachable": {}}
        # A dry run and an explain decide nothing that is kept.
        assert (await client.post("/v1/placements", json={"spec": SPEC})).status_code == 200
        assert (await client.post("/v1/workloads", json={"spec": SPEC, "dry_run": True})).status_code == 200
        assert (await client.get("/v1/decisions")).json()["decisions"] == []
        placed = await client.post("/v1/workloads", json={"spec": SPEC})  # no request id: placed by "a"
        assert placed.status_code == 201, placed.text
        refused = await client.post("/v1/workloads", json={"spec": SPEC, "policy": TOO_CHEAP})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_qualifying_node", refused.text

    async with fake.client("a", alice) as client:
        decisions = (await client.get("/v1/decisions")).json()["decisions"]
    assert [d["outcome"] for d in decisions] == ["no_node", "placed"]  # newest first
    assert decisions[0]["attempts"] == [] and decisions[0]["node"] is None
    assert {r["node"] for r in decisions[0]["decision"]["rejected"]} == {"a", "b"}
    assert decisions[0]["decision"]["policy"] == "too-cheap"
    d = decisions[-1]
    assert d["id"] == placed.json()["id"] and d["node"] == "b" and d["owner"] == "alice" and d["decided_by"] == "a"
    assert d["attempts"] == [{"node": "b", "outcome": "ok", "detail": ""}]
    assert [r["node"] for r in d["decision"]["ranked"]] == ["b", "a"]
    assert set(d["decision"]["ranked"][0]["components"]) == {"latency", "price", "reputation", "queue"}
    assert isinstance(d["time"], float) and d["decision"]["rejected_total"] == 0

    async with fake.client("a", bob) as client:
        assert (await client.get("/v1/decisions")).json()["decisions"] == []
        assert (await client.get("/v1/decisions", params={"cluster": "true"})).json()["decisions"] == []
    async with fake.client("a", ops) as client:
        assert len((await client.get("/v1/decisions")).json()["decisions"]) == len(decisions)
    # Asked through another node, the cluster-wide list finds the decisions "a" made, for the same user.
    async with fake.client("b", alice) as client:
        assert (await client.get("/v1/decisions")).json()["decisions"] == []
        body = (await client.get("/v1/decisions", params={"cluster": "true"})).json()
    assert body["unreachable"] == {} and [x["id"] for x in body["decisions"]] == [x["id"] for x in decisions]


async def test_the_ring_keeps_the_last_fifty(fake: FakeCluster) -> None:
    node = fake.add("a")
    ids = []
    for _ in range(DECISIONS_KEPT + 3):  # past the API's spawn rate limit: straight to the scheduler
        placement = await node.scheduler.place(WorkloadSpec(command="true", cpu=0.01, mem=1), owner="alice")
        assert placement.workload is not None
        ids.append(placement.workload["id"])
    async with fake.client("a", fake.token("alice")) as client:
        decisions = (await client.get("/v1/decisions")).json()["decisions"]
    assert [d["id"] for d in decisions] == ids[::-1][:DECISIONS_KEPT]


async def test_coordinates_are_public_and_read_what_the_node_has(fake: FakeCluster) -> None:
    a = fake.add("a")
    fake.add("b")
    fake.add("c")
    async with fake.client("a", None) as client:  # no token: public, like /v1/nodes
        # As the agent fills the book from Serf: a at the origin, b 3 ms east, c 4 ms north (height 0).
        for name, vec in (("a", [0.0, 0.0]), ("b", [0.003, 0.0]), ("c", [0.0, 0.004])):
            a.coordinates.set(name, Coordinate(vec=vec, error=0.1, adjustment=0.0, height=0.0))
        body = (await client.get("/v1/coordinates")).json()
    assert body["node"] == "a" and body["nodes"] == ["a", "b", "c"] and body["truncated"] is False
    assert body["rtt_ms"]["a"] == {"b": 3.0, "c": 4.0} and body["rtt_ms"]["b"]["c"] == 5.0
