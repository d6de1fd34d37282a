"""Issue 9 in-process: logs by lines, streamed and capped (also relayed), spawn rate limit, max workloads,
minimum CPU, garbage collection of finished workloads, quarantined registry rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path

from hypercore.api.ratelimit import FANOUT_BURST
from hypercore.runtime.gc import GarbageCollector, gc_interval
from hypercore.workload import WorkloadState
from tests.inprocess.harness import FakeCluster

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
SPEC = {"command": "sleep 60", "cpu": 0.1}


async def spawn_on_cheapest(fake: FakeCluster, via: str, token: str) -> tuple[str, str]:
    async with fake.client(via, token) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["node"]


async def test_logs_by_lines_streamed_capped_and_clean_locally_and_relayed(fake: FakeCluster) -> None:
    fake.add("a", price=0.03)
    fake.add("c", price=0.01)
    alice = fake.token("alice")
    wid, holder = await spawn_on_cheapest(fake, "a", alice)
    assert holder == "c"
    lines = [f"line {i} ".encode() + b"x" * 50 + b"\n" for i in range(20_000)]
    fake["c"].manager.logs_path(wid).write_bytes(b"".join(lines))
    async with fake.client("c", alice) as local, fake.client("a", alice) as relay:
        for client in (local, relay):
            tail = await client.get(f"/v1/workloads/{wid}/logs", params={"tail": 20})
            assert tail.status_code == 200 and tail.content == b"".join(lines[-20:])
            assert tail.headers["content-type"].startswith("text/plain")
            whole = await client.get(f"/v1/workloads/{wid}/logs")
            assert whole.content == b"".join(lines)
            assert (await client.get(f"/v1/workloads/{wid}/logs", params={"tail": -1})).status_code == 422
        assert ("c", "GET", f"/v1/local/workloads/{wid}/logs?tail=20") in fake["a"].transport.calls  # type: ignore[attr-defined]

        # The cap: a whole log is answered with its last max_log_bytes, from a line start; on the relay too.
        fake["c"].max_log_bytes = 10_000
        fake["a"].max_log_bytes = 5_000
        capped = (await local.get(f"/v1/workloads/{wid}/logs")).content
        assert len(capped) <= 10_000 and capped.endswith(lines[-1]) and capped.startswith(b"line ")
        relayed = (await relay.get(f"/v1/workloads/{wid}/logs")).content
        assert len(relayed) == 5_000 and relayed == capped[:5_000]  # the relay cuts what it passes on

        # Invalid UTF-8: one '?' per bad byte, never inflated; a character cut by a chunk boundary survives.
        fake["c"].max_log_bytes = fake["a"].max_log_bytes = 64 * 1024 * 1024
        raw = b"\xff" * 200_000 + "é".encode() * 100_000 + b"\n"
        fake["c"].manager.logs_path(wid).write_bytes(raw)
        for client in (local, relay):
            body = (await client.get(f"/v1/workloads/{wid}/logs")).content
            assert len(body) == len(raw) and body == b"?" * 200_000 + "é".encode() * 100_000 + b"\n"


async def test_a_token_spawning_too_fast_gets_429_with_retry_after(fake: FakeCluster) -> None:
    node = fake.add("a")
    assert (node.spawn_rate, node.spawn_burst) == (20.0, 40)
    started = time.monotonic()
    async with fake.client("a", fake.token("alice")) as alice, fake.client("a", fake.token("root", True)) as root, \
            fake.client("a", fake.token("bob")) as bob:
        answers = await asyncio.gather(*(alice.post("/v1/workloads", json={"spec": SPEC, "dry_run": True})
                                         for _ in range(395)))
        elapsed = time.monotonic() - started
        ok = [r for r in answers if r.status_code == 200]
        limited = [r for r in answers if r.status_code == 429]
        assert len(ok) + len(limited) == 395, {r.status_code for r in answers}
        assert 40 <= len(ok) <= 40 + 20 * elapsed + 1, (len(ok), elapsed)
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert limited[0].json()["error"]["code"] == "rate_limited" and "alice" in limited[0].json()["error"]["message"]
        # Another user has a bucket of their own; a management token is limited too.
        assert (await bob.post("/v1/workloads", json={"spec": SPEC, "dry_run": True})).status_code == 200
        root_answers = [await root.post("/v1/workloads", json={"spec": SPEC, "dry_run": True}) for _ in range(60)]
        assert any(r.status_code == 429 for r in root_answers)


async def test_max_workloads_refuses_with_409_at_capacity(fake: FakeCluster) -> None:
    node = fake.add("a")
    assert node.manager.max_workloads == 256  # the default, wired through Node
    node.manager.max_workloads = 2
    async with fake.client("a", fake.token("alice")) as alice:
        for _ in range(2):
            assert (await alice.post("/v1/workloads", json={"spec": SPEC})).status_code == 201
        third = await alice.post("/v1/workloads", json={"spec": SPEC})
    assert third.status_code == 503 and "at capacity (2 workloads" in third.text, third.text
    attempt = {"id": "5b0a4c1e-0000-4000-8000-000000000001", "spec": SPEC}
    direct = await node.transport.request("a", "POST", "/v1/local/workloads", json_body=attempt)
    assert direct.status == 409 and "at capacity" in direct.text, direct.text


async def test_a_workload_below_the_minimum_cpu_is_refused_with_why(fake: FakeCluster) -> None:
    fake.add("a")
    async with fake.client("a", fake.token("alice")) as alice:
        r = await alice.post("/v1/workloads", json={"spec": {"command": "true", "cpu": 1e-6}})
        # Refused by every node's admission (503, each attempt saying why), or by the spec's own check (422).
        assert r.status_code in (422, 503) and "0.01" in r.text, r.text
        assert (await alice.post("/v1/workloads", json={"spec": {"command": "true", "cpu": 0.01}})).status_code == 201


async def test_garbage_collection_removes_only_workloads_finished_long_enough_ago(fake: FakeCluster) -> None:
    node = fake.add("a")
    token = fake.token("alice")
    async with fake.client("a", token) as alice:
        ids = [(await alice.post("/v1/workloads", json={"spec": SPEC})).json()["id"] for _ in range(3)]
        old, recent, running = ids
        for wid in (old, recent):
            assert (await alice.delete(f"/v1/workloads/{wid}")).status_code == 200
    manager = node.manager
    manager.store.update(old, finished_at=time.time() - 7200)
    assert (manager.logs_path(old).parent).is_dir()
    removed = await GarbageCollector(manager, gc_after=3600).collect()
    assert removed == [old]
    assert manager.store.get(old) is None and not manager.logs_path(recent).parent.with_name(old).exists()
    assert manager.store.get(recent).state is WorkloadState.STOPPED  # type: ignore[union-attr]
    later = GarbageCollector(manager, gc_after=3600, clock=lambda: time.time() + 3601)
    assert await later.collect() == [recent]
    assert manager.store.get(running).state is WorkloadState.RUNNING  # type: ignore[union-attr]
    assert gc_interval(86400) == 600 and gc_interval(60) == 6 and gc_interval(1) == 1


async def test_a_bad_registry_row_is_listed_quarantined_and_never_fails_a_start(fake: FakeCluster, tmp_path: Path) -> None:
    node = fake.add("a")
    token = fake.token("alice")
    async with fake.client("a", token) as alice:
        good = (await alice.post("/v1/workloads", json={"spec": SPEC})).json()["id"]
    bad_spec, bad_state = "0a0a0a0a-0000-4000-8000-000000000001", "0a0a0a0a-0000-4000-8000-000000000002"
    with sqlite3.connect(node.store.path) as db:
        db.execute("INSERT INTO workloads (id, spec, state, driver, node, created_at, owner) VALUES "
                   "(?, '{\"command\": \"\", \"cpu\": -1}', 'running', 'exec', 'a', 1.0, 'alice')", (bad_spec,))
        db.execute("INSERT INTO workloads (id, spec, state, driver, node, created_at, owner) VALUES "
                   "(?, ?, 'zombie', 'exec', 'a', 'not a time', 'alice')",
                   (bad_state, json.dumps({"command": "true"})))
    async with fake.client("a", token) as alice:
        listed = await alice.get("/v1/workloads")
        assert listed.status_code == 200, listed.text
        by_id = {w["id"]: w for w in listed.json()["workloads"]}
        assert by_id[good]["state"] == "running"
        assert by_id[bad_spec]["state"] == "unknown" and "spec does not validate" in by_id[bad_spec]["reason"]
        assert by_id[bad_state]["state"] == "unknown" and "'zombie' is not a known state" in by_id[bad_state]["reason"]
        assert by_id[bad_state]["created_at"] is None and by_id[bad_state]["spec"] == {"command": "true"}
    async with fake.client("a", fake.token("bob")) as bob:
        other = await bob.get("/v1/workloads")
        assert bad_spec not in {w["id"] for w in other.json()["workloads"]}  # owners still apply
    # What a (re)start does with the registry: adopt, count, list. None of it trips on the rows.
    assert [r.id for r in await node.manager.adopt()] == []
    assert node.manager.queue_depth() >= 1 and node.manager.usage()[0] == 0.1
    assert {r.id for r in node.manager.list()} == {good}


async def test_requests_that_ask_every_node_are_limited_per_user(fake: FakeCluster) -> None:
    # Found attacking the API: a status of a workload id no holder knows asks every node, so one user's loop of
    # made-up ids sent N node requests per request, through any node, without limit.
    for name in ("a", "b", "c"):
        fake.add(name)
    sent = fake["a"].transport.calls  # type: ignore[attr-defined]
    async with fake.client("a", fake.token("alice")) as alice, fake.client("a", fake.token("bob")) as bob:
        made_up = [str(uuid.uuid4()) for _ in range(FANOUT_BURST + 10)]
        answers = [await alice.get(f"/v1/workloads/{wid}") for wid in made_up]
        codes = [r.status_code for r in answers]
        assert set(codes) == {404, 429} and codes.count(404) >= FANOUT_BURST, codes
        refused = next(r for r in answers if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and "asking every node" in refused.json()["error"]["message"]
        # What the refused ones cost: nothing past the holders asked for an entry (no request to every node).
        asked_all = [wid for wid in made_up if sum(1 for _, _, p in sent if p == f"/v1/local/workloads/{wid}") >= 2]
        assert len(asked_all) == codes.count(404), (len(asked_all), codes.count(404))
        # The same bucket for a list of every node's workloads; a list of a few named nodes is not one.
        assert (await alice.get("/v1/workloads")).status_code == 429
        assert (await alice.get("/v1/workloads", params={"nodes": "a,b"})).status_code == 200
        assert (await alice.get("/v1/decisions", params={"cluster": "true"})).status_code == 429
        assert (await bob.get("/v1/workloads")).status_code == 200  # another user has a bucket of their own
