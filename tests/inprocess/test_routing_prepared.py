"""A node's first answer on a route costs no more than its later ones: the routing is built before serving.

FastAPI 0.16x builds each included router's route state (dependencies, parameter models: pydantic
schemas) the first time a request is matched against that router, about 20 ms for the node's app,
and reads each endpoint's source location with `inspect` at its first request.
In a large cluster most of a spawn's hops (the forward to the request id's owner, the claim on its
buddies, the attempt) reach a node that never answered that route before, so spawns at 100 nodes paid
it again and again (docs/scale.md). `hypercore.api.app.prepare_routing` walks every router at startup.

This test counts FastAPI's own route-state builds, an internal of FastAPI: it skips, saying so, on a
FastAPI without it (then there is nothing to build at the first request either).
"""

from __future__ import annotations

import uuid

import fastapi.routing
import pytest

from tests.inprocess.harness import FakeCluster

SPEC = {"command": "sleep 60", "cpu": 0.1}


async def test_the_first_spawn_through_fresh_nodes_builds_no_routes(fake: FakeCluster,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    included = getattr(fastapi.routing, "_IncludedRouter", None)
    if included is None or not hasattr(included, "_build_effective_context"):
        pytest.skip(f"FastAPI {fastapi.__version__} builds no route state per router at the first request")
    built: list[str] = []
    original = included._build_effective_context

    def counting(self: object, route: object) -> object:
        built.append(getattr(route, "path", repr(route)))
        return original(self, route)

    monkeypatch.setattr(included, "_build_effective_context", counting)
    names = ["n1", "n2", "n3", "n4", "n5"]
    for name in names:
        fake.add(name)
    assert built, "making the apps built their routing"
    built.clear()
    located = getattr(fastapi.routing, "_endpoint_context_cache", {})  # endpoints' source lines, read with inspect
    before = len(located)
    async with fake.client("n1", fake.token("alice")) as client:
        for _ in range(3):  # forwards, claims on buddies, attempts: first requests on most nodes' routes
            r = await client.post("/v1/workloads", json={"spec": SPEC, "request_id": uuid.uuid4().hex})
            assert r.status_code == 201, r.text
        assert (await client.get("/v1/workloads")).status_code == 200
    assert built == [], f"routes built while serving: {sorted(set(built))}"
    assert len(located) == before, "an endpoint's source location was looked up while serving"
