"""An idle node's background loops sleep until what they read changes (issue 10: the idle CPU floor).

Before, replication checked the registry 4 times a second and the membership watch ran twice a second
whether or not anything had changed; both re-ranked every alive node each time. Now each loop runs on a
change notice (the workload registry, the member list, the manifests held) or at its own next deadline.
The counts below are behaviour, not timing: they fail on the polling loops (8 and 4 ticks in 2 s).
"""

from __future__ import annotations

import asyncio
import time

from hypercore.store import WorkloadRecord
from hypercore.workload import WorkloadSpec, WorkloadState, new_workload_id
from tests.inprocess.harness import FakeCluster, wait_until

SPEC = WorkloadSpec(command="sleep 300", cpu=0.01)


def count_ticks(fake: FakeCluster, name: str) -> dict[str, int]:
    counts = {"replication": 0, "watch": 0}
    failover = fake[name].failover
    for part, attr in (("replication", failover.replication), ("watch", failover.respawn)):
        real = attr.tick

        def counted(real=real, part=part):  # type: ignore[no-untyped-def]
            counts[part] += 1
            return real()

        attr.tick = counted  # type: ignore[method-assign]
    return counts


async def test_an_idle_nodes_failover_loops_do_not_poll(fake: FakeCluster) -> None:
    for name in ("a", "b", "c"):
        fake.add(name, flagged=True)
    counts = count_ticks(fake, "a")
    fake.run_failover(["a", "b", "c"])
    await wait_until(lambda: fake["b"].failover.replicas.get("a") is not None, 10, "a's first manifest on b")
    await asyncio.sleep(0.5)  # the first pushes' answers
    before = dict(counts)
    await asyncio.sleep(2.0)
    assert counts["replication"] - before["replication"] == 0, counts
    assert counts["watch"] - before["watch"] == 0, counts


async def test_a_new_workload_reaches_the_buddies_at_once_and_a_failure_is_seen_at_once(fake: FakeCluster) -> None:
    for name in ("a", "b", "c"):
        fake.add(name, flagged=True)
    fake.run_failover(["a", "b", "c"])
    await wait_until(lambda: fake["b"].failover.replicas.get("a") is not None, 10, "a's first manifest on b")
    await asyncio.sleep(1.0)  # past the rebuild interval: the next change is pushed at once
    wid = new_workload_id()
    start = time.monotonic()
    fake["a"].store.insert(WorkloadRecord(id=wid, spec=SPEC, state=WorkloadState.RUNNING, driver="exec", node="a",
                                          created_at=time.time(), owner="alice"))

    def replicated() -> bool:
        return all(any(w.id == wid for w in (fake[h].failover.replicas.get("a") or _empty()).workloads) for h in "bc")

    await wait_until(replicated, 5, "the new workload in a's manifest on b and c")
    # Within the old 0.25 s polling period plus a push (a loaded machine gets a second).
    assert time.monotonic() - start < 1.0
    fake.fail("a")  # a member event: the watch runs now, not at its next 5 s tick
    await wait_until(lambda: "a" in fake["b"].failover.respawn._failed_since, 2, "b's watch to see a failed")


class _empty:
    workloads: list = []


async def test_a_spawns_two_registry_writes_make_one_push_per_buddy(fake: FakeCluster) -> None:
    # A spawn writes the registry twice, pending then running (≈ 50 ms apart): each write was pushed to both
    # buddies (the second 0.5 s after the first), 4.2 manifest pushes per spawn at 100 nodes (bench/scale.py).
    for name in ("a", "b", "c"):
        fake.add(name, flagged=True)
    fake.run_failover(["a", "b", "c"])
    await wait_until(lambda: fake["b"].failover.replicas.get("a") is not None, 10, "a's first manifest on b")
    await asyncio.sleep(1.0)  # past the rebuild interval and the first pushes' answers
    pushes = fake["a"].failover.ctx.metrics.pushes.labels(outcome="ok")
    before = pushes._value.get()
    wid = new_workload_id()
    fake["a"].store.insert(WorkloadRecord(id=wid, spec=SPEC, state=WorkloadState.PENDING, driver="exec", node="a",
                                          created_at=time.time(), owner="alice"))
    await asyncio.sleep(0.05)
    fake["a"].store.update(wid, state=WorkloadState.RUNNING)

    def running_on_buddies() -> bool:
        return all(any(w.id == wid and w.state == "running" for w in (fake[h].failover.replicas.get("a") or _empty()).workloads)
                   for h in "bc")

    await wait_until(running_on_buddies, 5, "the running workload in a's manifest on b and c")
    await asyncio.sleep(1.0)  # a second push would have gone out by now
    assert pushes._value.get() - before == 2
