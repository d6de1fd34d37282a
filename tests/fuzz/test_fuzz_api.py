"""Fuzz the API's spawn, placement and policy routes in-process (tests/inprocess/harness.py).

Whatever the body, the answer is below 500 and, for an error, our JSON error
body {"error": {"code", "message"}}; a policy the API took is served back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Obj, as_bytes, documents, policies, specs, trees
from tests.fuzz.support import FuzzCases, fuzz
from tests.inprocess.harness import FakeCluster

JSON = {"content-type": "application/json"}


class Api:
    """One in-process node and its users' clients, on an event loop of their own."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake: FakeCluster = self.loop.run_until_complete(self._start(root))
        self.user = self.fake.client("a", self.fake.token("alice"))
        self.admin = self.fake.client("a", self.fake.token("root", management=True))

    @staticmethod
    async def _start(root: Path) -> FakeCluster:
        fake = FakeCluster(root)
        fake.add("a")
        fake.add("b")
        return fake

    def call(self, client: httpx.AsyncClient, method: str, path: str, body: bytes) -> httpx.Response:
        return self.loop.run_until_complete(client.request(method, path, content=body, headers=JSON))

    def close(self) -> None:
        async def stop() -> None:
            await self.user.aclose()
            await self.admin.aclose()
            await self.fake.close()

        self.loop.run_until_complete(stop())
        self.loop.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    app = Api(tmp_path_factory.mktemp("fuzz-api"))
    try:
        yield app
    finally:
        app.close()


def check(r: httpx.Response) -> Any:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, r.text[:500]
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return body


def _spawn_bodies() -> st.SearchStrategy[bytes]:
    shaped = st.fixed_dictionaries(
        {"spec": specs, "dry_run": st.just(True)},  # a dry run: fuzz the edge, not the cluster's capacity
        optional={"policy": policies, "request_id": st.text(max_size=20) | trees},
    )
    extra = st.builds(lambda body, key, value: Obj((*body.items(), (key, value))), shaped, st.text(max_size=8), trees)
    return documents(shaped | extra | trees).map(as_bytes)


def _placement_bodies() -> st.SearchStrategy[bytes]:
    shaped = st.fixed_dictionaries({}, optional={"spec": specs, "policy": policies})
    return documents(shaped | trees).map(as_bytes)


def test_fuzz_api_spawn(api: Api, fuzz_cases: FuzzCases) -> None:
    @fuzz(400)
    @given(_spawn_bodies())
    def run(body: bytes) -> None:
        fuzz_cases.tick()
        check(api.call(api.user, "POST", "/v1/workloads", body))

    run()
    fuzz_cases.report()


def test_fuzz_api_placements(api: Api, fuzz_cases: FuzzCases) -> None:
    @fuzz(300)
    @given(_placement_bodies())
    def run(body: bytes) -> None:
        fuzz_cases.tick()
        answer = check(api.call(api.user, "POST", "/v1/placements", body))
        if isinstance(answer, dict) and "error" not in answer:
            assert {"policy", "ranked", "rejected", "summary"} <= set(answer)

    run()
    fuzz_cases.report()


def test_fuzz_api_policy_put(api: Api, fuzz_cases: FuzzCases) -> None:
    @fuzz(400)
    @given(documents(policies).map(as_bytes))
    def run(body: bytes) -> None:
        fuzz_cases.tick()
        r = api.call(api.admin, "PUT", "/v1/policy", body)
        check(r)
        if r.status_code == 200:  # a policy the API took is served back as taken
            served = check(api.call(api.user, "GET", "/v1/policy", b""))
            assert served == r.json()

    run()
    fuzz_cases.report()
