"""A node that joins is placeable under an enforce policy with a latency rule within 5 s of joining.

Until a node has a latency figure from the origin, `low-latency` (enforce,
max_latency_ms 100, max_jitter_ms 20) rejects it as `latency_ms unknown`. The
origin probes a member the moment Serf reports its join (and reads its
network coordinate); before that, it waited for its next probe round.
Real agents and serf on loopback: the two first nodes run nothing (no exec),
so the newcomer is the only node that can take the work. Probe rounds are 30 s
apart here, so only what happens at the join can make it placeable in time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hypercore.devcluster import Cluster

POLICY = json.loads((Path(__file__).resolve().parents[2] / "examples" / "policies" / "low-latency.json").read_text())
PLACEABLE_S = 5.0


def test_a_joining_node_is_placeable_under_a_latency_rule_within_5_s(cluster: Cluster) -> None:
    slow_rounds = ("--disable-containers", "--probe-interval", "30")
    cluster.add("origin", *slow_rounds)
    cluster.add("other", *slow_rounds)
    cluster.wait_converged()
    started = time.monotonic()
    cluster.add("newcomer", "--enable-exec", *slow_rounds, wait=False)
    origin = cluster["origin"]
    joined = placeable = None
    decision: dict = {}
    while time.monotonic() - started < 40:
        now = time.monotonic()
        if joined is None and origin.nodes().get("newcomer", {}).get("status") == "alive":
            joined = now  # the origin has heard of it from Serf
        if joined is not None:
            decision = origin.post("/v1/placements", {"spec": {"command": "true"}, "policy": POLICY}).json()
            if [r["node"] for r in decision["ranked"]] == ["newcomer"]:
                placeable = now
                break
        time.sleep(0.05)
    assert joined is not None, f"newcomer never joined:\n{cluster['newcomer'].log()}"
    assert placeable is not None, decision
    print(f"newcomer: joined {joined - started:.2f} s after its start, placeable {placeable - joined:.2f} s later")
    assert placeable - joined <= PLACEABLE_S, (placeable - joined, decision)
