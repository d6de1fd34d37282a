"""`GET /v1/ping` skips the middleware stack (issue 10: probes are an idle cluster's steadiest traffic), but
not the Host check: a name not allowed still gets the stack's 400, as every other route does."""

from __future__ import annotations

import httpx

from hypercore.api.app import create_app
from tests.inprocess.harness import FakeCluster


async def test_ping_answers_fast_for_allowed_hosts_only(fake: FakeCluster) -> None:
    node = fake.add("a")
    app = create_app(node, ["a", "127.0.0.1", "::1"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://a") as client:
        for host in ("a", "A:8443", "127.0.0.1:8001", "[::1]:8001"):
            r = await client.get("/v1/ping", headers={"Host": host})
            assert r.status_code == 200 and r.json() == {"node": "a"}, (host, r.text)
            assert r.headers["content-type"] == "application/json"
        for host in ("evil.example", "a.evil.example", ""):
            r = await client.get("/v1/ping", headers={"Host": host})
            assert r.status_code == 400, (host, r.text)
        assert (await client.post("/v1/ping", headers={"Host": "a"})).status_code == 405  # the router's answer
        # Every other route still goes through the stack (the Host check included).
        assert (await client.get("/v1/policy", headers={"Host": "evil.example"})).status_code == 400
        assert (await client.get("/v1/policy", headers={"Host": "a"})).status_code == 200
