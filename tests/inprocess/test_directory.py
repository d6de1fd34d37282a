"""The placement directory in-process: O(1) requests per spawn, owner death, joins, views that disagree, hostile writes.

Real Nodes, API and SQLite; no sockets (tests/inprocess/harness.py). The
same paths over real agents and mutual TLS: tests/cluster/test_directory.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hypercore.membership.rpc import Member
from hypercore.placement import request_rank, user_request_id, workload_id_for
from hypercore.placement.directory import DirectoryEntry, DirectoryStore, holders_of
from tests.inprocess.harness import FakeCluster, wait_until

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
SPEC = {"command": "sleep 60", "cpu": 0.1}
NODE_PATHS = ("/v1/local/",)


def calls(fake: FakeCluster, since: dict[str, int] | None = None) -> list[tuple[str, str, str, str]]:
    """The node-to-node calls made (after the `mark` `since`): (from, to, method, path)."""
    return [(n, *c) for n, node in fake.nodes.items()
            for c in node.transport.calls[(since or {}).get(n, 0):]]  # type: ignore[attr-defined]


def mark(fake: FakeCluster) -> dict[str, int]:
    return {n: len(node.transport.calls) for n, node in fake.nodes.items()}  # type: ignore[attr-defined]


def request_id(nodes: list[str], owner: str, not_first: tuple[str, ...] = (), user: str = "alice") -> str:
    """A request id whose owner among `nodes` is `owner`; nodes in `not_first` are not among its holders."""
    for r in (f"req-{i}" for i in range(5000)):
        ranked = request_rank(user_request_id(user, r), nodes)
        if ranked[0] == owner and not set(ranked[:3]) & set(not_first):
            return r
    raise AssertionError("no such request id")


async def spawn_via(fake: FakeCluster, client: Any, rid: str) -> tuple[Any, list[tuple[str, str, str, str]]]:
    """alice's spawn of SPEC with COST and request id `rid` through `client` (placed on n1), and the
    node-to-node calls it made, queries cut off, sorted."""
    before = mark(fake)
    r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert r.status_code == 201 and r.json()["node"] == "n1", r.text
    return r, sorted((f, t, m, p.split("?")[0]) for f, t, m, p in calls(fake, before))


async def status_asked_of(fake: FakeCluster, node: str, wid: str) -> list[tuple[str, str, str, str]]:
    """The node-to-node calls `node` makes to answer alice's GET /v1/workloads/{wid} (which must find it)."""
    async with fake.client(node, fake.token("alice")) as client:
        before = mark(fake)
        status = await client.get(f"/v1/workloads/{wid}")
    assert status.status_code == 200 and status.json()["id"] == wid, status.text
    return calls(fake, before)


def priced(fake: FakeCluster, names: list[str]) -> None:
    """Add `names` to the cluster, the first the cheapest (COST places there)."""
    for i, name in enumerate(names):
        fake.add(name, price=0.01 * (i + 1))


def copies(fake: FakeCluster, wid: str) -> int:
    return sum(wid in d.running for d in fake.drivers.values())


async def test_a_spawn_costs_at_most_four_node_requests_and_a_retry_at_most_two(fake: FakeCluster) -> None:
    names = ["n1", "n2", "n3", "n4", "n5"]
    for i, name in enumerate(names):
        fake.add(name, price=0.01 * (i + 1))  # n1 is the cheapest: COST places there
    rid = request_id(names, "n3", not_first=("n1", "n5"))  # via n5, owned by n3, placed on n1: every hop remote
    key = user_request_id("alice", rid)
    async with fake.client("n5", fake.token("alice")) as client:
        r, made = await spawn_via(fake, client, rid)
        # forward to the owner, the claim on its two buddies, the attempt: nothing sent to every node.
        assert made == sorted([
            ("n5", "n3", "POST", "/v1/local/spawn"),
            *(("n3", b, "PUT", "/v1/local/directory") for b in holders_of(key, names)[1:]),
            ("n3", "n1", "POST", "/v1/local/workloads")]), made
        # The claim's connections were opened while the owner decided, the attempt's while the claim ran
        # (connections, not requests: Transport.warm).
        assert fake["n3"].transport.warmed == [*holders_of(key, names)[1:], "n1"]  # type: ignore[attr-defined]
        before = mark(fake)
        again = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
        assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "n1"
        made = calls(fake, before)
        assert sorted(made) == sorted([("n5", "n3", "POST", "/v1/local/spawn"),
                                       ("n3", "n1", "GET", f"/v1/local/workloads/{r.json()['id']}")]), made
    # Every holder has the entry; the owner's says where it went.
    owner_entry = fake["n3"].directory.store.get(key)
    assert owner_entry is not None and owner_entry.state == "placed" and owner_entry.node == "n1"
    for buddy in holders_of(key, names)[1:]:
        held = fake[buddy].directory.store.get(key)
        assert held is not None and "n1" in held.maybe_holding()
    assert copies(fake, r.json()["id"]) == 1


async def test_a_spawn_whose_owner_cannot_be_reached_goes_to_its_next_holder_not_to_every_node(
    fake: FakeCluster,
) -> None:
    # An owner alive to Serf but refusing connections: the receiving node placed the spawn itself, and not
    # being a holder it had no entry to read, so it asked every alive node for a copy (N requests per spawn,
    # and per retry). The next holder keeps the entry too: it places, and a retry reads one entry.
    names = ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"]
    priced(fake, names)
    rid = request_id(names, "n3", not_first=("n1", "n8"))  # via n8, owned by n3, placed on n1
    key = user_request_id("alice", rid)
    owner, buddy, other = holders_of(key, names)
    fake.down.add(owner)
    async with fake.client("n8", fake.token("alice")) as client:
        r, made = await spawn_via(fake, client, rid)
        assert made == sorted([
            ("n8", owner, "POST", "/v1/local/spawn"),  # refused
            ("n8", buddy, "POST", "/v1/local/spawn"),
            (buddy, owner, "PUT", "/v1/local/directory"),  # refused: passed over
            (buddy, other, "PUT", "/v1/local/directory"),
            (buddy, "n1", "POST", "/v1/local/workloads")]), made
        before = mark(fake)
        again = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
        assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "n1"
        assert len(calls(fake, before)) == 3, calls(fake, before)  # owner refused, buddy, the node its entry names
    fake.down.discard(owner)
    # The owner, back, did not get the claim: its own claim meets the buddies' entry, which names n1.
    async with fake.client("n5", fake.token("alice")) as client:
        back = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert back.status_code == 200 and back.json()["existing"] is True and back.json()["node"] == "n1", back.text
    assert copies(fake, r.json()["id"]) == 1


async def test_when_the_owner_dies_mid_placement_its_buddy_asks_the_named_node_and_places_no_second_copy(
    fake: FakeCluster,
) -> None:
    names = ["a", "b", "c", "d"]
    priced(fake, names)
    rid = request_id(names, "b", not_first=("a",))  # placed on a (cheapest), which is not a holder
    key = user_request_id("alice", rid)
    buddy = holders_of(key, names)[1]
    async with fake.client("d", fake.token("alice")) as client:
        first = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert first.status_code == 201 and first.json()["node"] == "a", first.text
    # No flush ran: the buddy knows only the claim, made before the attempt — as if b died with it in flight.
    held = fake[buddy].directory.store.get(key)
    assert held is not None and held.state == "placing" and held.trying == ["a"]
    fake.fail("b")
    assert request_rank(key, fake[buddy].view.peers())[0] == buddy  # the buddy owns the request id now
    async with fake.client("d", fake.token("alice")) as client:
        again = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "a", again.text
    assert copies(fake, first.json()["id"]) == 1
    now = fake[buddy].directory.store.get(key)
    assert now is not None and now.state == "placed" and now.node == "a"


async def test_a_node_that_joins_above_the_owner_finds_the_entry_on_its_buddy(fake: FakeCluster) -> None:
    names = ["a", "b", "c"]
    priced(fake, names)
    # A request id that the newcomer "j" will own, whose owner before j joined is b.
    rid = next(r for r in (f"req-{i}" for i in range(5000))
               if request_rank(user_request_id("alice", r), names)[0] == "b"
               and request_rank(user_request_id("alice", r), [*names, "j"])[0] == "j")
    async with fake.client("c", fake.token("alice")) as client:
        first = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
        assert first.status_code == 201, first.text
        fake.add("j", price=0.0001)  # the cheapest of all: a second copy would land there
        again = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert again.status_code == 200 and again.json()["existing"] is True, again.text
    assert again.json()["node"] == first.json()["node"] and copies(fake, first.json()["id"]) == 1
    assert fake.drivers["j"].started == []
    # j asked its buddies (b among them), not every node.
    assert not [c for c in calls(fake) if c[0] == "j" and c[2] == "GET" and c[3].startswith("/v1/local/workloads/")
                and c[1] != first.json()["node"]]


async def test_a_node_whose_view_misses_the_owner_finds_the_copy_through_a_holder_both_views_share(
    fake: FakeCluster,
) -> None:
    names = ["a", "b", "c", "d"]
    for name, price in zip(names, (0.04, 0.03, 0.01, 0.02)):  # c is the cheapest, then d
        fake.add(name, price=price)
    rid = next(r for r in (f"req-{i}" for i in range(5000))
               if request_rank(user_request_id("alice", r), names)[:2] == ["b", "a"])
    key = user_request_id("alice", rid)
    fake.down.add("a")  # b's claim does not reach a: only the third holder has it
    async with fake.client("c", fake.token("alice")) as client:
        first = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert first.status_code == 201 and first.json()["node"] == "c", first.text
    fake.down.discard("a")
    assert fake["a"].directory.store.get(key) is None
    # a has not yet heard that b is alive (say, b just rejoined): in a's view it is a's own request id.
    members = [Member(name=n, addr="127.0.0.1", port=7946, tags=t, status="alive" if n != "b" else "failed")
               for n, t in fake.beacons.items()]
    fake["a"].view.update(members)
    assert fake["a"].scheduler.holders_of(user_request_id("alice", rid))[0] == "a"
    async with fake.client("a", fake.token("alice")) as client:
        again = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "c", again.text
    assert copies(fake, first.json()["id"]) == 1
    # a's claim met b's entry on the holder both views share, which named c: asked, found, not placed again.
    assert fake["a"].directory.store.get(key).node == "c"  # type: ignore[union-attr]


async def test_holders_keep_only_writes_of_a_holder_about_itself_and_never_an_older_version(fake: FakeCluster) -> None:
    names = ["a", "b", "c", "d"]
    for name in names:
        fake.add(name)
    key = user_request_id("alice", request_id(names, "a", not_first=("d",)))
    holder = holders_of(key, names)[1]
    good = DirectoryEntry(key=key, id=workload_id_for(key), state="placed", node="c", version=10, by="a",
                          updated_at=time.time())

    async def push(caller: str, entry: dict, base: int) -> dict:
        r = await fake[caller].transport.request(holder, "PUT", "/v1/local/directory",
                                                 json_body={"writes": [{"entry": entry, "base": base}]})
        assert r.status == 200, r.text
        return r.json()["results"][0]

    assert (await push("a", good.model_dump(mode="json"), 0))["stored"] is True
    older = {**good.model_dump(mode="json"), "version": 5, "node": "d"}
    kept = await push("a", older, 0)
    assert kept["stored"] is False and kept["held"]["version"] == 10 and kept["held"]["node"] == "c"
    # d is not a holder of this request id; and no node writes in another's name.
    refused = await push("d", {**good.model_dump(mode="json"), "by": "d", "version": 11}, 10)
    assert "not a holder" in refused["refused"]
    # ... but it hears what is held here: a writer whose view is ahead of this node's (a home just back, which
    # the others do not see yet) must look at the nodes it names before it places, not place blind.
    assert refused["held"]["version"] == 10 and refused["held"]["node"] == "c"
    assert "written by a" in (await push("d", {**good.model_dump(mode="json"), "version": 11}, 10))["refused"]
    assert fake[holder].directory.store.get(key) == good
    # An entry cannot point a request id at another workload; a push has at most 1,000 writes.
    wrong = await fake["a"].transport.request(holder, "PUT", "/v1/local/directory", json_body={"writes": [
        {"entry": {**good.model_dump(mode="json"), "id": workload_id_for("other")}, "base": 10}]})
    assert wrong.status == 422 and "is not the workload id of request" in wrong.text
    many = await fake["a"].transport.request(holder, "PUT", "/v1/local/directory", json_body={"writes": [
        {"entry": good.model_dump(mode="json"), "base": 10}] * 1001})
    assert many.status == 422 and "at most 1000" in many.text
    async with fake.client(holder, fake.token("alice")) as client:  # a user token opens no node route
        assert (await client.get(f"/v1/local/directory/{key}")).status_code == 403
    got = await fake["d"].transport.request(holder, "GET", f"/v1/local/directory/{key}")
    assert got.status == 200 and got.json()["node"] == "c"


async def test_an_outcome_that_changes_what_buddies_would_ask_reaches_them_with_the_next_flush(fake: FakeCluster) -> None:
    names = ["a", "b", "c", "d"]
    priced(fake, names)
    rid = request_id(names, "c", not_first=("a",))
    key = user_request_id("alice", rid)
    fake.down.add("a")  # the cheapest: its attempt fails with a connection error, b takes it
    async with fake.client("c", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert r.status_code == 201 and [(a["node"], a["outcome"]) for a in r.json()["attempts"]] == [
        ("a", "error"), ("b", "ok")], r.text
    buddies = holders_of(key, names)[1:]
    # Before each attempt the buddies heard of it; a (it may have started it) stays named until it is settled.
    assert all(fake[n].directory.store.get(key).trying == ["a", "b"] for n in buddies)  # type: ignore[union-attr]
    def pushes(since: dict[str, int]) -> list[tuple[str, str, str, str]]:  # (a's retraction goes on meanwhile)
        return sorted(c for c in calls(fake, since) if c[3] == "/v1/local/directory")

    before = mark(fake)
    await fake["c"].directory.flush()
    assert pushes(before) == sorted(("c", n, "PUT", "/v1/local/directory") for n in buddies)
    for n in buddies:
        held = fake[n].directory.store.get(key)
        assert held is not None and held.state == "placed" and held.maybe_holding() == ["b"]
    before = mark(fake)
    await fake["c"].directory.flush()
    assert pushes(before) == []  # delivered: nothing more to send


async def test_entries_go_once_their_workload_is_removed(fake: FakeCluster) -> None:
    names = ["a", "b", "c"]
    priced(fake, names)
    alice = fake.token("alice")
    async with fake.client("a", alice) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": "gc-me"})
        assert r.status_code == 201, r.text
        key, wid = user_request_id("alice", "gc-me"), r.json()["id"]
        owner = holders_of(key, names)[0]
        await fake[owner].directory.flush()  # what the agent's loop does every 5 s: nothing to send
        assert fake[owner].directory.store.get(key).state == "placed"  # type: ignore[union-attr]
        # The buddies keep the claim, which names the node it went to: all a later owner needs.
        assert all(fake[n].directory.store.get(key).maybe_holding() == [r.json()["node"]]  # type: ignore[union-attr]
                   for n in names)
        for n in names:  # still running: nothing is dropped
            assert await fake[n].directory.sweep(keep_s=0) == 0
        assert (await client.delete(f"/v1/workloads/{wid}")).status_code == 200
        for n in names:  # stopped, but still there: kept (a retry must find it)
            assert await fake[n].directory.sweep(keep_s=0) == 0
        assert (await client.post(f"/v1/workloads/{wid}/remove")).status_code == 200
    for n in names:
        assert await fake[n].directory.sweep(keep_s=0) == 1
        assert fake[n].directory.store.get(key) is None


def test_a_damaged_directory_file_is_set_aside_and_the_node_starts_empty(tmp_path: Path) -> None:
    (tmp_path / "directory.sqlite3").write_bytes(b"this is not a database" * 100)
    store = DirectoryStore(tmp_path)
    try:
        assert store.count() == 0
        assert len(list(tmp_path.glob("directory.sqlite3.damaged-*"))) == 1
    finally:
        store.close()


async def test_a_burst_of_one_request_sent_everywhere_meets_at_the_owner_and_its_directory(fake: FakeCluster) -> None:
    for name in ("a", "b", "c", "d", "e"):
        fake.add(name)
    token = fake.token("alice")
    import asyncio

    clients = [fake.client(n, token) for n in ("a", "b", "c", "d", "e")]
    try:
        answers = await asyncio.gather(*(c.post("/v1/workloads", json={"spec": SPEC, "request_id": "burst"})
                                         for c in clients for _ in range(2)))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in answers) == [200] * 9 + [201], [r.text for r in answers]
    wid = workload_id_for(user_request_id("alice", "burst"))
    await wait_until(lambda: copies(fake, wid) == 1, 2, "one copy")
    assert sum(len(d.started) for d in fake.drivers.values()) == 1


async def test_a_forwarded_spawns_answer_carries_the_top_ten_and_counts_not_every_node(fake: FakeCluster) -> None:
    names = [f"n{i:02d}" for i in range(15)]
    for i, name in enumerate(names):
        fake.add(name, price=0.001 * (i + 1), cpu=100 if i < 12 else 0.01, advertised_cpu=100 if i < 12 else 0.01)
    rid = request_id(names, "n05", not_first=("n14",))
    async with fake.client("n14", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert r.status_code == 201, r.text
    decision = r.json()["decision"]
    assert [x["node"] for x in decision["ranked"]] == names[:10] and decision["ranked_more"] == 2
    assert len(decision["rejected"]) == 3 and decision["rejected_more"] == 0  # the three without room
    assert decision["summary"].startswith("12/15 nodes match policy 'cost-optimized'"), decision["summary"]  # counts cover all


async def test_stop_and_logs_asked_where_the_spawn_was_sent_go_to_its_node_not_to_every_node(fake: FakeCluster) -> None:
    # Seen in bench/scale.py at 100 nodes: each stop asked all 100 nodes where the workload was (seconds each).
    names = ["n1", "n2", "n3", "n4", "n5"]
    priced(fake, names)
    rid = request_id(names, "n3", not_first=("n1", "n5"))  # via n5, owned by n3, placed on n1
    async with fake.client("n5", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
        assert r.status_code == 201 and r.json()["node"] == "n1", r.text
        wid = r.json()["id"]
        before = mark(fake)
        logs = await client.get(f"/v1/workloads/{wid}/logs")
        stopped = await client.delete(f"/v1/workloads/{wid}")
        assert logs.status_code == 200 and stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        made = calls(fake, before)
        assert {t for _, t, _, _ in made} == {"n1"}, made  # n5 asks n1 only: 2 lookups, the logs, the stop
        assert len(made) == 4, made


async def test_a_node_that_never_saw_the_spawn_finds_the_workload_through_its_holders_not_every_node(
    fake: FakeCluster,
) -> None:
    # Found when trying the system as a user: `cluster stop`, `logs` or `status` sent to any node other than
    # the one the spawn went through asked every alive node for the workload (N requests: 10,000 at 10,000
    # nodes). A workload id names its request's holders, and the first one's entry names the node.
    names = ["n1", "n2", "n3", "n4", "n5", "n6"]
    priced(fake, names)
    rid = request_id(names, "n3", not_first=("n1", "n5", "n6"))  # via n5, owned by n3, placed on n1; n6 knows nothing
    async with fake.client("n5", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert r.status_code == 201 and r.json()["node"] == "n1", r.text
    wid = r.json()["id"]
    assert await status_asked_of(fake, "n6", wid) == [
        ("n6", "n3", "GET", f"/v1/local/entries/{wid}"),  # the first holder's entry names n1
        ("n6", "n1", "GET", f"/v1/local/workloads/{wid}"),  # n1 shows it to alice
        ("n6", "n1", "GET", f"/v1/local/workloads/{wid}")]  # the answer relayed
    async with fake.client("n6", fake.token("alice")) as client:
        before = mark(fake)
        logs = await client.get(f"/v1/workloads/{wid}/logs")
        stopped = await client.delete(f"/v1/workloads/{wid}")
        assert logs.status_code == 200 and stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        made = calls(fake, before)
        assert {t for _, t, _, _ in made} == {"n1"} and len(made) == 4, made  # n6 now knows: no second entry lookup
    # Another user is told it does not exist, as before: n1 does not show it to bob (a fan-out then finds nothing).
    async with fake.client("n6", fake.token("bob")) as client:
        assert (await client.get(f"/v1/workloads/{wid}")).status_code == 404


async def test_a_holder_that_answers_with_another_workloads_entry_is_not_believed(fake: FakeCluster) -> None:
    names = ["a", "b", "c", "d", "e"]
    priced(fake, names)
    rid = request_id(names, "b", not_first=("a", "e"))
    async with fake.client("c", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert r.status_code == 201 and r.json()["node"] == "a", r.text
    wid = r.json()["id"]
    # b's store now says, for this workload id, that another request's workload went to c (a lying holder).
    other = user_request_id("alice", "other")
    lie = DirectoryEntry(key=other, id=workload_id_for(other), state="placed", node="c", version=1, by="b",
                         updated_at=time.time())
    assert fake["b"].directory.store.by_workload(wid) is not None
    fake["b"].directory.store.by_workload = lambda _wid: lie  # type: ignore[method-assign]
    entry = await fake["e"].directory.entry_for(wid)
    assert entry is not None and entry.id == wid and entry.maybe_holding() == ["a"]  # the next holder's, not b's


async def test_a_workload_spawned_without_a_request_id_is_looked_for_everywhere_without_asking_holders(
    fake: FakeCluster,
) -> None:
    # Its id is random (not derived from a request id): no holder can have an entry for it, so none is asked.
    names = ["n1", "n2", "n3", "n4"]
    priced(fake, names)
    async with fake.client("n4", fake.token("alice")) as client:
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST})
    assert r.status_code == 201 and r.json()["node"] == "n1", r.text
    wid = r.json()["id"]
    made = await status_asked_of(fake, "n3", wid)
    assert not [c for c in made if c[3].startswith("/v1/local/entries/")], made
    assert {t for _, t, m, p in made if p == f"/v1/local/workloads/{wid}"} >= {"n1", "n2", "n4"}, made  # every node


async def test_a_listing_of_some_nodes_asks_those_nodes_only(fake: FakeCluster) -> None:
    # `cluster metrics --limit L` counted each node's workloads from a listing of every node's (N requests for a
    # page of L nodes); `GET /v1/workloads?nodes=` asks the named nodes only.
    names = ["n1", "n2", "n3", "n4", "n5"]
    priced(fake, names)
    async with fake.client("n5", fake.token("alice")) as client:
        for _ in range(2):
            assert (await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST})).status_code == 201
        before = mark(fake)
        some = await client.get("/v1/workloads", params={"nodes": "n1,n2,gone"})
        assert some.status_code == 200, some.text
        assert {t for _, t, _, _ in calls(fake, before)} == {"n1", "n2"}  # "gone" is no member: not dialled
        assert [w["node"] for w in some.json()["workloads"]] == ["n1", "n1"]
        assert "gone" in some.json()["unreachable"]
        assert (await client.get("/v1/workloads", params={"nodes": "n3,n4"})).json()["workloads"] == []
        too_many = await client.get("/v1/workloads", params={"nodes": ",".join(f"x{i}" for i in range(101))})
        assert too_many.status_code == 422 and "nodes: 101 names are not allowed (at most 100" in too_many.text
        bad = await client.get("/v1/workloads", params={"nodes": "n1,../etc"})
        assert bad.status_code == 422 and "nodes: '../etc' is not a node name" in bad.text


async def test_a_spawn_whose_owner_does_not_answer_in_time_is_not_placed_elsewhere(
    fake: FakeCluster, monkeypatch: Any,
) -> None:
    # A silent owner may still be placing it: unlike one that refuses connections, it is not passed over for the
    # next holder, and the user is told to retry with the same request id (504).
    import hypercore.placement.forwarding as forwarding

    monkeypatch.setattr(forwarding, "FORWARD_TIMEOUT_S", 0.3)  # 110 s on a real node
    names = ["n1", "n2", "n3", "n4", "n5", "n6"]
    priced(fake, names)
    rid = request_id(names, "n3", not_first=("n1", "n5"))
    fake.frozen.add("n3")
    async with fake.client("n5", fake.token("alice")) as client:
        before = mark(fake)
        r = await client.post("/v1/workloads", json={"spec": SPEC, "policy": COST, "request_id": rid})
    assert r.status_code == 504, r.text
    error = r.json()["error"]
    assert error["code"] == "owner_timeout" and "node n3" in error["message"] and "retry" in error["message"]
    assert calls(fake, before) == [("n5", "n3", "POST", "/v1/local/spawn")]  # no other holder asked
    assert not any(d.started for d in fake.drivers.values())
