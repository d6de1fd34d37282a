"""What the console keeps of a placement: a capped list, and the true count of what was rejected."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from hypercore.placement.model import Attempt
from hypercore.placement.scheduler import DECISIONS_KEPT, Scheduler
from hypercore.policy import Policy, decide


def test_a_kept_decision_says_how_many_nodes_were_rejected_not_how_many_it_lists() -> None:
    # 30 nodes, 25 over the latency limit: the console's "Rejected: N" must say 25 (it said 10, the list's cap).
    nodes = [{"name": f"n{i:02d}", "latency_ms": 10.0 if i < 5 else 500.0, "reputation": 0.9} for i in range(30)]
    decision = decide(Policy.model_validate({"name": "near", "mode": "enforce", "max_latency_ms": 100}), nodes)
    scheduler = SimpleNamespace(decisions=deque(maxlen=DECISIONS_KEPT), node_name="n00")
    Scheduler._record(scheduler, decision, "placed", "w-1", "alice", [Attempt("n01", "ok")], "n01")  # type: ignore[arg-type]
    kept = scheduler.decisions[-1]["decision"]
    assert kept["rejected_total"] == 25 and len(kept["rejected"]) == 10 and kept["rejected_more"] == 15
    assert len(kept["ranked"]) == 5 and scheduler.decisions[-1]["node"] == "n01"
