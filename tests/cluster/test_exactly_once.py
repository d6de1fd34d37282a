"""One spawn, one workload: request ids, frozen nodes, failed placements and load (real processes)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from hypercore.devcluster import USER, Cluster, Node, live_workload_processes, wait_for
from hypercore.placement import request_rank, user_request_id, workload_id_for

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
# A burst test, not a rate-limit test: the per-user spawn limit is raised out of the way.
EXEC = ("--enable-exec", "--disable-containers", "--capacity-cpu", "500", "--spawn-rate", "1000", "--spawn-burst", "1000")
pytestmark = pytest.mark.cluster


def test_the_same_request_id_twice_to_one_node_or_another_yields_one_workload(cluster: Cluster) -> None:
    for name, price in (("a", "0.01"), ("b", "0.02"), ("c", "0.03")):
        cluster.add(name, *EXEC, "--beacon-price", price)
    cluster.wait_converged()
    body = {"spec": {"command": "sleep 120", "cpu": 0.1}, "policy": COST, "request_id": "req-" + uuid.uuid4().hex}
    first = cluster["a"].post("/v1/workloads", body)
    assert first.status_code == 201, first.text
    again = cluster["a"].post("/v1/workloads", body)
    elsewhere = cluster["c"].post("/v1/workloads", body)
    assert again.status_code == 200 and elsewhere.status_code == 200, (again.text, elsewhere.text)
    assert first.json()["id"] == again.json()["id"] == elsewhere.json()["id"]
    assert again.json()["existing"] is True and elsewhere.json()["node"] == first.json()["node"]
    assert live_workload_processes()[first.json()["id"]] == 1

    # Sent to all three nodes at the same moment: still one workload.
    body = dict(body, request_id="req-" + uuid.uuid4().hex)
    results: list = []
    threads = [threading.Thread(target=lambda n=n: results.append(cluster[n].post("/v1/workloads", body))) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 200, 201], [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert live_workload_processes()[results[0].json()["id"]] == 1


@pytest.mark.parametrize("freeze_after", [0.0, 0.05])
def test_a_node_frozen_during_the_spawn_leaves_no_second_copy(cluster: Cluster, freeze_after: float) -> None:
    frozen = cluster.add("frozen", *EXEC, "--beacon-price", "0.005", "--placement-timeout", "2")
    cluster.add("backup", *EXEC, "--beacon-price", "0.02", "--placement-timeout", "2")
    origin = cluster.add("origin", "--disable-containers", "--placement-timeout", "2")
    cluster.wait_converged()
    # A request id placed by a node that stays awake (a frozen owner is a
    # different failure: the client gets a 504 and retries).
    request_id = next(r for r in (f"frz-{uuid.uuid4().hex}" for _ in range(100))
                      if request_rank(user_request_id(USER, r), ["frozen", "backup", "origin"])[0] != "frozen")
    body = {"spec": {"command": "sleep 120", "cpu": 0.1}, "policy": COST, "request_id": request_id}
    out: list = []
    sender = threading.Thread(target=lambda: out.append(origin.post("/v1/workloads", body)))
    sender.start()
    # Not a wait for an event: the parameter picks the moment of the freeze
    # (before the spawn reaches the node, or while it is under way).
    time.sleep(freeze_after)
    frozen.signal(signal.SIGSTOP)
    try:
        sender.join(30)
        r = out[0]
        assert r.status_code in (200, 201), r.text
        wid = r.json()["id"]
        if r.json()["node"] == "backup":
            assert r.json()["attempts"][0] == {"node": "frozen", "outcome": "timeout", "detail": "no answer within 2 s"}
    finally:
        frozen.signal(signal.SIGCONT)
    # Thawed, the frozen node must not keep (or start) a copy of its own.
    frozen.wait_healthy()  # answering again: it is working through what it missed
    try:
        wait_for(lambda: live_workload_processes()[wid] == 1, 20, "exactly one live copy")
    except AssertionError as exc:
        copies = live_workload_processes()[wid]
        raise AssertionError(f"{exc}: {copies} copies of {wid} placed on {r.json()['node']}\n"
                             f"frozen's log:\n{frozen.log()[-4000:]}") from None
    # A fixed wait is right here: it checks that no second copy appears later.
    time.sleep(3)
    assert live_workload_processes()[wid] == 1
    holders = [w["node"] for w in origin.get("/v1/workloads").json()["workloads"] if w["id"] == wid and w["state"] == "running"]
    assert holders == [r.json()["node"]]


def test_when_every_attempt_times_out_nothing_is_left_running(cluster: Cluster) -> None:
    only = cluster.add("only", *EXEC, "--placement-timeout", "1.5")
    origin = cluster.add("origin", "--disable-containers", "--placement-timeout", "1.5")
    cluster.wait_converged()
    request_id = next(r for r in (f"fail-{uuid.uuid4().hex}" for _ in range(100))
                      if request_rank(user_request_id(USER, r), ["only", "origin"])[0] == "origin")
    only.signal(signal.SIGSTOP)
    try:
        r = origin.post("/v1/workloads", {"spec": {"command": "sleep 120", "cpu": 0.1}, "request_id": request_id})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["attempts"] == [{"node": "only", "outcome": "timeout", "detail": "no answer within 1.5 s"}]
    finally:
        only.signal(signal.SIGCONT)
    wid = workload_id_for(user_request_id(USER, request_id))
    only.wait_healthy()  # answering again, so it has seen the abandoned request
    # A fixed wait is right here: it checks that no copy starts late.
    time.sleep(4)
    assert live_workload_processes()[wid] == 0


# The burst is placed by queue depth alone. Under the default policy the receiving node's latency advantage
# (0 ms to itself) is worth a queued workload per 2 ms of its peers' measured RTT, and on a loaded machine
# those RTTs grow: the clean-clone CI put 140 of 200 on the receiving node once (107 and 115 before), with no
# attempt failing. What this test checks is the spreading itself (placements counted before the beacons show
# them, the chosen nodes' answered queue depths): without it one owner sent all its share to one node.
SPREAD = {"name": "spread", "scoring": {"latency_weight": 0, "price_weight": 0, "reputation_weight": 0,
                                        "queue_weight": 1}}


async def _spawn_many(node: Node, n: int) -> list[tuple[int, dict]]:
    headers = {"Authorization": f"Bearer {node.token}"}
    connector = aiohttp.TCPConnector(limit=0, ssl=node.pki.verify())
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async def one(i: int) -> tuple[int, dict]:
            body = {"spec": {"command": "sleep 120", "cpu": 0.01, "mem": 1}, "request_id": f"load-{i}-{uuid.uuid4().hex}",
                    "policy": SPREAD}
            async with session.post(f"{node.url}/v1/workloads", json=body, timeout=aiohttp.ClientTimeout(total=120)) as r:
                return r.status, await r.json()

        return await asyncio.gather(*(one(i) for i in range(n)))


def _attempts_passed_over(cluster: Cluster) -> dict[str, Counter[str]]:
    """Per owner, the attempts it passed over to the next node, by outcome and node (from its log)."""
    out: dict[str, Counter[str]] = {}
    for name in ("a", "b", "c"):
        failed = [line for line in cluster[name].log().splitlines() if "spawn attempt failed" in line]
        out[name] = Counter(" ".join(part for part in line.split() if part.startswith(("node=", "outcome=")))
                            for line in failed)
    return out


def test_200_concurrent_spawns_complete_once_each_and_spread_evenly(cluster: Cluster) -> None:
    for name in ("a", "b", "c"):
        cluster.add(name, *EXEC)
    cluster.wait_converged()
    results = asyncio.run(_spawn_many(cluster["a"], 200))
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 200}, (statuses, [b for s, b in results if s != 201][:3])
    ids = [body["id"] for _, body in results]
    assert len(set(ids)) == 200
    per_node = Counter(body["node"] for _, body in results)
    # It has failed now and then under 4 test workers (107 and 115 of 200 on one node): say what the owners saw.
    assert max(per_node.values()) <= 1.5 * 200 / 3, (per_node, _attempts_passed_over(cluster))
    # Count from the runtime itself: every workload runs exactly once.
    def all_running() -> Counter[str] | None:
        copies = live_workload_processes()
        return copies if sum(copies[i] for i in ids) >= 200 else None

    copies = wait_for(all_running, 30, "200 live copies")
    assert all(copies[i] == 1 for i in ids)
    listed = cluster["b"].get("/v1/workloads").json()["workloads"]
    assert sorted(w["id"] for w in listed if w["state"] == "running") == sorted(ids)
