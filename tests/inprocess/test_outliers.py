"""Outlier ejection: a node that keeps failing attempts is skipped by the origin for a growing while."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypercore.placement.outliers import OutlierDetector
from hypercore.runtime.base import RuntimeRefused
from hypercore.policy import PolicyEngine, load_policy_file
from hypercore.workload import WorkloadSpec
from tests.inprocess.harness import FakeCluster, MemoryDriver

ROOT = Path(__file__).resolve().parents[2]
COST = load_policy_file(ROOT / "examples" / "policies" / "cost-optimized.json")
SPEC = WorkloadSpec(command="sleep 60", cpu=0.1)


class BrokenDriver(MemoryDriver):
    """Its engine fails every start (like --container-engine pointing at a program that exits 1)."""

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> dict[str, Any]:
        raise RuntimeRefused("podman run exited with status 1: engine broken")


def test_three_failures_in_a_row_eject_for_a_period_that_doubles_and_success_forgets() -> None:
    now = [0.0]
    d = OutlierDetector(consecutive=3, base_ejection=10, max_ejection=25, clock=lambda: now[0])
    d.record("n", "refused", "node n lacks capacity: ...")  # capacity: honest, not a fault
    d.record("n", "timeout", "no answer within 2 s")
    d.record("n", "error", "HTTP 500")
    assert d.ejected() == {}
    d.record("n", "refused", "HTTP 409: workload already exists here with a different spec")
    assert "after 3 failed attempts" in d.ejected()["n"]
    now[0] = 10.5
    assert d.ejected() == {}
    for _ in range(3):
        d.record("n", "error", "ClientConnectorError")
    now[0] = 25.0
    assert "n" in d.ejected()  # the second ejection lasts 20 s
    now[0] = 31.0
    assert d.ejected() == {}
    for _ in range(3):
        d.record("n", "error", "x")
    now[0] = 31.0 + 24.9
    assert "n" in d.ejected()  # capped at 25 s
    d.record("n", "ok")
    for _ in range(3):
        d.record("n", "error", "x")
    now[0] += 10.5
    assert d.ejected() == {}  # after a success the back-off starts over at 10 s


def test_the_engine_rejects_excluded_nodes_in_every_mode_with_the_reason() -> None:
    nodes = [{"name": "a", "price_per_gb": 0.001, "latency_ms": 1, "reputation": 1, "queue_depth": 0},
             {"name": "b", "price_per_gb": 0.005, "latency_ms": 1, "reputation": 1, "queue_depth": 0}]
    engine = PolicyEngine()
    decision = engine.evaluate(nodes, COST, exclude={"a": "ejected for 10 s"})
    assert [r.node for r in decision.ranked] == ["b"]
    assert {r.node: r.reasons for r in decision.rejected} == {"a": ("ejected for 10 s",)}
    assert "1 ejected for 10 s" in decision.summary and decision.violations == {}
    strict = COST.model_copy(update={"mode": "permissive", "rules": COST.rules.model_copy(update={"max_price_per_gb": 0.0001})})
    fallback = engine.evaluate(nodes, strict, exclude={"a": "ejected"})
    assert fallback.fallback and [r.node for r in fallback.ranked] == ["b"]  # not even as a fallback


async def test_a_node_whose_runtime_fails_every_start_stops_being_tried_first(fake: FakeCluster) -> None:
    broken = fake.add("broken", price=0.001)
    fake.add("good", price=0.02)
    origin = fake.add("origin", price=0.5)
    broken.manager._drivers["exec"] = BrokenDriver()
    attempts = []
    for _ in range(5):
        placement = await origin.scheduler.place(SPEC, COST)
        assert placement.node == "good"
        attempts.append([a.node for a in placement.attempts])
    assert attempts[:3] == [["broken", "good"]] * 3
    assert attempts[3:] == [["good"], ["good"]]  # ejected after 3 failures: one attempt each
    decision = origin.scheduler.decide(SPEC, COST)
    reasons = {r.node: r.reasons for r in decision.rejected}["broken"]
    assert "failed attempts in a row" in reasons[0]
    assert json.dumps(decision.to_dict())  # and it renders
