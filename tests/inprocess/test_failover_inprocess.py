"""Failover in-process: replication (5,000 workloads too), respawn exactly once, return of the failed node."""

from __future__ import annotations

import time

from hypercore.failover import respawn_id
from hypercore.store import WorkloadRecord
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.inprocess.harness import FakeCluster, wait_until

SPEC = WorkloadSpec(command="sleep 300", cpu=0.01, env={"SECRET": "x" * 200})


def held_by(fake: FakeCluster, holder: str, owner: str) -> int:
    manifest = fake[holder].failover.replicas.get(owner)
    return len(manifest.workloads) if manifest else -1


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
    assert fake["a"].metrics.registry.get_sample_value("hypercore_failover_moved_away_total") == 3
