"""The placement protocol in-process: owners, per-id locks, attempts, refusals, timeouts, late starts, users."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from hypercore.placement import request_rank, user_request_id, workload_id_for
from hypercore.workload import LocalSpawnRequest, WorkloadSpec
from tests.inprocess.harness import FakeCluster, wait_until

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
SPEC = {"command": "sleep 60", "cpu": 0.1}


def request_id_owned_by(owner: str, nodes: list[str], user: str = "alice") -> str:
    return next(r for r in (f"req-{i}" for i in range(1000))
                if request_rank(user_request_id(user, r), nodes)[0] == owner)


async def test_a_request_reaches_its_owner_and_a_retry_anywhere_yields_the_same_workload(fake: FakeCluster) -> None:
    for name, price in (("a", 0.03), ("b", 0.02), ("c", 0.01)):
        fake.add(name, price=price)
    alice = fake.token("alice")
    rid = request_id_owned_by("b", ["a", "b", "c"])
    async with fake.client("a", alice) as via_a, fake.client("c", alice) as via_c:
        first = await via_a.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
        assert first.status_code == 201, first.text
        assert first.json()["node"] == "c" and first.json()["id"] == workload_id_for(user_request_id("alice", rid))
        # a forwarded it to b (the owner), which placed it on c (the cheapest).
        assert ("b", "POST", "/v1/local/spawn") in fake["a"].transport.calls  # type: ignore[attr-defined]
        assert ("c", "POST", "/v1/local/workloads") in fake["b"].transport.calls  # type: ignore[attr-defined]
        again = await via_c.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
        assert again.status_code == 200 and again.json()["existing"] is True and again.json()["id"] == first.json()["id"]
    assert fake.drivers["c"].started == [first.json()["id"]]


async def test_the_same_request_sent_to_every_node_at_once_starts_one_workload(fake: FakeCluster) -> None:
    for name in ("a", "b", "c"):
        fake.add(name)
    token = fake.token("alice")
    clients = [fake.client(n, token) for n in ("a", "b", "c")]
    try:
        body = {"spec": SPEC, "request_id": "same-one"}
        answers = await asyncio.gather(*(c.post("/v1/workloads", json=body) for c in clients for _ in range(3)))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in answers) == [200] * 8 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(len(d.started) for d in fake.drivers.values()) == 1
    assert all(len(n.scheduler._locks) == 0 for n in fake.nodes.values())  # no lock left behind


async def test_refusals_errors_and_timeouts_move_on_to_the_next_node(fake: FakeCluster) -> None:
    fake.add("full", price=0.001, cpu=0.05, advertised_cpu=100)  # cheapest; its beacon is stale: it refuses 0.1 CPU
    fake.add("gone", price=0.002)
    fake.add("frozen", price=0.003)
    fake.add("ok", price=0.004)
    fake.add("origin", price=0.5)
    fake.down.add("gone")
    fake.frozen.add("frozen")
    placement = await fake["origin"].scheduler.place(WorkloadSpec(**SPEC), None)
    outcomes = [(a.node, a.outcome) for a in placement.attempts]
    assert outcomes[:4] == [("full", "refused"), ("gone", "error"), ("frozen", "timeout"), ("ok", "ok")], outcomes
    assert "lacks capacity" in placement.attempts[0].detail and "no answer within 2 s" in placement.attempts[2].detail
    assert placement.node == "ok"
    # The timed-out attempt is retracted in the background once the node answers again.
    fake.frozen.discard("frozen")
    await wait_until(lambda: ("frozen", "DELETE", f"/v1/local/workloads/{placement.workload['id']}?reason=retracted")
                     in fake["origin"].transport.calls, 5, "the retraction")  # type: ignore[attr-defined]


async def test_when_every_node_refuses_the_spawn_fails_with_each_attempt(fake: FakeCluster) -> None:
    fake.add("a", cpu=0.05, advertised_cpu=100)
    fake.add("b", cpu=0.05, advertised_cpu=100)
    async with fake.client("a", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "placement_failed" and sorted(a["node"] for a in err["attempts"]) == ["a", "b"]
    assert all(a["outcome"] == "refused" for a in err["attempts"])


async def test_a_start_that_ends_after_its_deadline_is_stopped_when_the_origin_placed_it_elsewhere(
    fake: FakeCluster,
) -> None:
    fake.add("origin")
    slow = fake.add("slow", start_delay=0.3)
    fake.add("winner")
    wid = workload_id_for("late-one")
    fake["origin"].scheduler._remember(wid, "placed", "winner")
    record = await slow.scheduler.receiver.accept(LocalSpawnRequest(
        id=wid, spec=WorkloadSpec(**SPEC), deadline=time.time() + 0.1, origin="origin"))
    assert record["state"] == "running"
    await wait_until(lambda: slow.manager.get(wid).state.value == "stopped", 5, "the late copy to stop")
    assert "placed on winner" in (slow.manager.get(wid).error or "")
    # Arriving after the deadline, an attempt starts nothing at all.
    with pytest.raises(Exception, match="deadline passed"):
        await slow.scheduler.receiver.accept(LocalSpawnRequest(id=workload_id_for("too-late"), spec=WorkloadSpec(**SPEC),
                                                               deadline=time.time() - 1, origin="origin"))
    assert workload_id_for("too-late") not in fake.drivers["slow"].started


async def test_users_see_only_their_own_workloads_and_a_management_token_sees_all(fake: FakeCluster) -> None:
    fake.add("a")
    fake.add("b")
    alice, bob, ops = fake.token("alice"), fake.token("bob"), fake.token("ops", management=True)
    async with fake.client("a", alice) as as_alice, fake.client("b", bob) as as_bob, fake.client("b", ops) as as_ops:
        mine = (await as_alice.post("/v1/workloads", json={"spec": SPEC, "request_id": "x"})).json()["id"]
        theirs = await as_bob.post("/v1/workloads", json={"spec": SPEC, "request_id": "x"})
        assert theirs.status_code == 201 and theirs.json()["id"] != mine
        assert {w["id"] for w in (await as_bob.get("/v1/workloads")).json()["workloads"]} == {theirs.json()["id"]}
        for method, path in (("GET", f"/v1/workloads/{mine}"), ("DELETE", f"/v1/workloads/{mine}"),
                             ("GET", f"/v1/workloads/{mine}/logs")):
            assert (await as_bob.request(method, path)).status_code == 404
        assert len((await as_ops.get("/v1/workloads")).json()["workloads"]) == 2
        assert (await as_ops.delete(f"/v1/workloads/{mine}")).json()["state"] == "stopped"
        assert (await as_bob.put("/v1/policy", json={"name": "x"})).status_code == 403
        assert (await as_bob.get("/v1/local/workloads")).status_code == 403  # a token opens no node route


async def test_healthz_says_starting_until_the_node_is_part_of_the_cluster(fake: FakeCluster) -> None:
    node = fake.add("a")
    node.ready = False  # as between the HTTP server's start and the first beacon and member read
    async with fake.client("a", None) as client:
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "starting"
        node.ready = True
        assert (await client.get("/healthz")).json() == {"status": "ok", "node": "a"}
