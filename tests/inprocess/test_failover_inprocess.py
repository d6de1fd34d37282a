"""Failover in-process: replication (5,000 workloads too), respawn exactly once, return of the failed node."""

from __future__ import annotations

import asyncio
import time

from hypercore.failover import respawn_id
from hypercore.store import WorkloadRecord
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.inprocess.harness import FakeCluster, wait_until

SPEC = WorkloadSpec(command="sleep 300", cpu=0.01, env={"SECRET": "x" * 200})


def held_by(fake: FakeCluster, holder: str, owner: str) -> int:
    manifest = fake[holder].failover.replicas.get(owner)
    return len(manifest.workloads) if manifest else -1


async def a_and_seven(fake: FakeCluster, workloads: int) -> tuple[list[str], list[str]]:
    """Node a (the cheapest) running `workloads` of alice's, and seven others (n0 and n1 flagged to respawn)
    holding its manifest: (the seven, a's workload ids)."""
    fake.add("a", price=0.001)
    others = [f"n{i}" for i in range(7)]
    for i, name in enumerate(others):
        fake.add(name, price=0.01 * (i + 1), flagged=name in ("n0", "n1"))
    fake.run_failover()
    ids = [(await fake["a"].manager.accept(SPEC, owner="alice")).id for _ in range(workloads)]
    await wait_until(lambda: sum(held_by(fake, x, "a") == workloads for x in others) >= 2, 10,
                     "a's manifest on its buddies")
    return others, ids


async def test_a_manifest_of_5000_workloads_replicates_to_both_buddies(fake: FakeCluster) -> None:
    for name in ("a", "b", "c"):
        fake.add(name)
    store = fake["a"].store
    for _ in range(5000):
        store.insert(WorkloadRecord(id=new_workload_id(), spec=SPEC, state=WorkloadState.RUNNING, driver="exec",
                                    node="a", created_at=time.time(), owner="alice"))
    fake.run_failover(["a"])
    await wait_until(lambda: held_by(fake, "b", "a") == 5000 and held_by(fake, "c", "a") == 5000, 20,
                     "a's 5,000-workload manifest on b and c")
    # Over the 1 MiB limit of the other routes: the replica route has its own (16 MiB).
    assert len(fake["a"].failover.replication.manifest.model_dump_json()) > 1024 * 1024  # type: ignore[union-attr]
    refused = fake["a"].metrics.registry.get_sample_value("hypercore_failover_manifest_pushes_total",
                                                          {"outcome": "refused"})
    assert refused is None


async def test_a_failed_nodes_workloads_run_again_once_and_its_old_copies_stop_when_it_returns(
    fake: FakeCluster,
) -> None:
    fake.add("a", price=0.001)
    fake.add("b", price=0.02, flagged=True)
    fake.add("c", price=0.03, flagged=True)
    fake.run_failover()
    # Four workloads placed on a (accepted there directly); one of them stopped on purpose.
    keep = [(await fake["a"].manager.accept(SPEC, owner="alice")).id for _ in range(3)]
    gone = (await fake["a"].manager.accept(SPEC, owner="alice")).id
    await fake["a"].manager.stop(gone)
    assert all(w in fake.drivers["a"].running for w in keep)
    await wait_until(lambda: held_by(fake, "b", "a") == 3 and held_by(fake, "c", "a") == 3, 10, "a's manifest")

    fake.fail("a")
    moved = {w: respawn_id(w) for w in keep}
    await wait_until(lambda: all(any(n in fake.drivers[x].running for x in ("b", "c")) for n in moved.values()), 15,
                     "every workload of a to run again")
    copies = [n for x in ("b", "c") for n in fake.drivers[x].started]
    assert sorted(copies) == sorted(moved.values())  # each once, the stopped one not at all
    assert respawn_id(gone) not in copies
    for new in moved.values():
        holder = next(x for x in ("b", "c") if new in fake.drivers[x].running)
        assert fake[holder].store.get(new).owner == "alice"  # the owner travels with the workload

    fake.revive("a")
    await wait_until(lambda: all(fake["a"].store.get(w).state is WorkloadState.STOPPED for w in keep), 15,
                     "a to stop its old copies")
    assert not any(w in fake.drivers["a"].running for w in keep)
    for w in keep:
        record = fake["a"].store.get(w)
        assert record.state is WorkloadState.STOPPED and record.error.startswith("moved to ")
    # Counted once each stop has returned, which can be a moment after its record shows it stopped.
    await wait_until(lambda: fake["a"].metrics.registry.get_sample_value("hypercore_failover_moved_away_total") == 3,
                     5, "the three stops counted")


async def test_a_respawn_is_placed_by_its_request_ids_owner_without_asking_every_node(fake: FakeCluster) -> None:
    # Found when reading the cost of a failure: each workload of a failed node was placed by the node holding
    # its manifest, which is not a holder of the respawn request id, so it asked every alive node for a copy
    # first (N requests per workload: 200,000 for 20 workloads at 10,000 nodes). Now the respawn goes to the
    # owner of its request id, like a user's spawn, whose placement directory finds a copy in O(1).
    others, keep = await a_and_seven(fake, 3)
    before = {n: len(node.transport.calls) for n, node in fake.nodes.items()}  # type: ignore[attr-defined]
    fake.fail("a")
    moved = {respawn_id(w) for w in keep}
    await wait_until(lambda: all(any(n in fake.drivers[x].running for x in others) for n in moved), 15,
                     "every workload of a to run again")
    copies = [n for x in others for n in fake.drivers[x].started]
    assert sorted(copies) == sorted(moved)  # each once
    made = [(n, *c) for n, node in fake.nodes.items() for c in node.transport.calls[before[n]:]]  # type: ignore[attr-defined]
    asked_for_copies = [c for c in made if c[2] == "GET" and any(c[3].endswith(m) for m in moved)]
    assert asked_for_copies == [], asked_for_copies  # nobody asked every node (6 each before)
    per_workload = [c for c in made if c[3] in ("/v1/local/failover/respawn", "/v1/local/workloads")
                    or c[3].startswith("/v1/local/directory")]
    assert len(per_workload) <= 3 * (1 + 2 + 1), per_workload  # each: to its owner, the claim on 2, the attempt


async def test_a_respawn_whose_owner_refuses_connections_is_placed_once_by_its_next_holder(fake: FakeCluster) -> None:
    # It waited for the owner until Serf marked it failed, or for ever while its Serf answered and its API did
    # not (a review had found that placing it on the manifest's holder, which holds no directory entry for it,
    # could start a second copy next to one the owner was still placing). The request id's next holder keeps
    # that entry too, as for a user's spawn (placement.forwarding): it places it, once.
    from hypercore.failover import respawn_request_id
    from hypercore.placement import request_rank

    others, ids = await a_and_seven(fake, 12)
    ranks = {w: request_rank(respawn_request_id(w), others) for w in ids}
    waiting = next(w for w in ids if ranks[w][0] not in ("n0", "n1"))  # owned by a node that holds no manifest
    owner, next_holder = ranks[waiting][:2]
    fake.down.add(owner)  # alive to Serf, refuses connections
    fake.fail("a")
    moved = {respawn_id(w) for w in ids}
    await wait_until(lambda: all(any(n in fake.drivers[x].running for x in others) for n in moved), 15,
                     "every workload of a to run again, the one whose owner refuses connections too")
    await wait_until(lambda: any(m.original_id == waiting and m.by == next_holder
                                 for m in fake[next_holder].failover.replicas.moves(owner="a")), 10,
                     "its placer, the next holder, to record the move")  # recorded once the placement answers
    fake.down.discard(owner)
    await asyncio.sleep(fake.failover_grace * 4)  # the other flagged holder's round, with the owner back
    assert sorted(n for x in others for n in fake.drivers[x].started) == sorted(moved)  # each once


async def test_a_failure_round_asks_no_alive_node_for_a_lookup(fake: FakeCluster) -> None:
    # Found reading the cost of a failure: each round began with a batched lookup on every alive node (which
    # of the failed node's workloads run again already): N requests a round, from the respawner and again from
    # each other flagged holder after its grace, and a round every 5 s while one cannot be placed. Each respawn
    # goes to its request id's owner, whose directory answers that in O(1) requests.
    others, keep = await a_and_seven(fake, 3)
    await asyncio.sleep(2.0)  # every node's start-up check is over (a returning node's lookup, once per start)
    before = {n: len(node.transport.calls) for n, node in fake.nodes.items()}  # type: ignore[attr-defined]
    fake.fail("a")
    moved = {respawn_id(w) for w in keep}
    await wait_until(lambda: all(any(n in fake.drivers[x].running for x in others) for n in moved), 15,
                     "every workload of a to run again")
    await asyncio.sleep(fake.failover_grace * 4)  # the other flagged holder's grace, and its round
    made = [(n, *c) for n, node in fake.nodes.items() for c in node.transport.calls[before[n]:]]  # type: ignore[attr-defined]
    # (a itself, failed to the others but running here, looks up its moves as a returning node does.)
    assert [c for c in made if c[3] == "/v1/local/failover/lookup" and c[0] != "a"] == []
    assert sorted(n for x in others for n in fake.drivers[x].started) == sorted(moved)  # each once
    for holder in ("n0", "n1"):  # both flagged holders know where each went
        await wait_until(lambda: {m.original_id for m in fake[holder].failover.replicas.moves(owner="a")} >= set(keep),
                         10, f"{holder} to know every move")
