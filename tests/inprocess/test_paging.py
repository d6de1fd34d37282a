"""GET /v1/workloads in pages (`limit`, `after`): every workload once, in creation order, across nodes."""

from __future__ import annotations

import time

from hypercore.store import WorkloadRecord
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.inprocess.harness import FakeCluster

SPEC = WorkloadSpec(command="sleep 300", cpu=0.01)


async def test_pages_of_a_listing_cover_every_workload_once_in_creation_order(fake: FakeCluster) -> None:
    for name in ("a", "b", "c"):
        fake.add(name)
    t0 = time.time()
    made = []
    for i in range(23):  # spread over the nodes, some with the same creation time
        node = "abc"[i % 3]
        record = WorkloadRecord(id=new_workload_id(), spec=SPEC, state=WorkloadState.RUNNING, driver="exec", node=node,
                                created_at=t0 + i // 2, owner="alice" if i != 7 else "bob")
        fake[node].store.insert(record)
        made.append(record)
    alice = sorted((r for r in made if r.owner == "alice"), key=lambda r: (r.created_at, r.id))
    async with fake.client("b", fake.token("alice")) as client:
        whole = (await client.get("/v1/workloads")).json()
        assert [w["id"] for w in whole["workloads"]] == [r.id for r in alice] and whole["next"] is None
        seen, after, pages = [], None, 0
        while True:
            r = await client.get("/v1/workloads", params={"limit": 5, **({"after": after} if after else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["workloads"]) <= 5
            seen += [w["id"] for w in body["workloads"]]
            pages += 1
            after = body["next"]
            if after is None:
                break
        assert seen == [r.id for r in alice] and pages == 5  # 22 of alice's: 5 pages, bob's never shown
        for bad, allowed in (({"after": "yesterday"}, "after: 'yesterday' is not a cursor"),
                             ({"limit": 0}, "limit"), ({"limit": 10_001}, "limit")):
            r = await client.get("/v1/workloads", params=bad)
            assert r.status_code == 422 and allowed in r.json()["error"]["message"], r.text
