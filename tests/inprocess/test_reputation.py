"""Reputation from evidence: priors attested by the CA, observations, peers' views, lying minorities."""

from __future__ import annotations

import base64
import dataclasses
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hypercore.beacon.tags import decode
from hypercore.policy import load_policy_file
from hypercore.reputation import Evidence, Reputation, beta_score, weighted_median
from hypercore.runtime.base import RuntimeRefused
from hypercore.workload import WorkloadSpec
from tests.inprocess.harness import FakeCluster, MemoryDriver

ROOT = Path(__file__).resolve().parents[2]
HIGH_TRUST = load_policy_file(ROOT / "examples" / "policies" / "high-trust.json")
COST = load_policy_file(ROOT / "examples" / "policies" / "cost-optimized.json")
SPEC = WorkloadSpec(command="sleep 60", cpu=0.1)


class BrokenDriver(MemoryDriver):
    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> dict[str, Any]:
        raise RuntimeRefused("podman run exited with status 1")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.floats(0, 1))
def test_a_failure_never_raises_and_a_success_never_lowers(s: int, f: int, prior: float) -> None:
    now = beta_score(Evidence(s, f), prior)
    assert beta_score(Evidence(s, f + 1), prior) <= now <= beta_score(Evidence(s + 1, f), prior)
    assert 0.0 <= now <= 1.0


def test_a_lying_minority_moves_no_honest_node_by_more_than_a_tenth() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    now = [time.time() - 3000.0]
    me = Reputation("n1", None, transport=None, peers=lambda: nodes, prior=lambda n: None,  # type: ignore[arg-type]
                    clock=lambda: now[0])
    for _ in range(40):  # 40 successes a minute apart each (successes within a minute count once)
        for peer in nodes[1:]:
            me.observe(peer, True, "attempt ok")
        now[0] += 60.0
    honest = {n: {"score": 0.95} for n in nodes}
    for observer in ("n2", "n3", "n4"):
        me.accept_view(observer, {"view": {k: v for k, v in honest.items() if k != observer}})
    before = {n: me.score(n) for n in nodes[1:]}
    me.accept_view("n5", {"view": {n: {"score": 0.0} for n in nodes if n != "n5"}})  # n5 says everyone failed
    for n in nodes[1:]:
        assert abs(me.score(n) - before[n]) <= 0.1, (n, before[n], me.score(n))
    assert weighted_median([(0.0, 1.0), (0.9, 1.0), (0.95, 1.0)]) == 0.9
    assert weighted_median([]) is None


async def test_a_nodes_own_claim_counts_for_nothing_and_an_attested_prior_does(fake: FakeCluster) -> None:
    fake.add("claims", price=0.001, reputation=1.0)  # its beacon says 1.0; nobody attested anything
    fake.add("attested", price=0.02, reputation=0.5, attested=0.95)  # says 0.5, the CA attested 0.95
    origin = fake.add("origin", price=0.5, attested=0.95)
    decision = origin.scheduler.decide(SPEC, HIGH_TRUST)
    ranked = [r.node for r in decision.ranked]
    assert "claims" not in ranked and "attested" in ranked
    assert {r.node: r.reasons for r in decision.rejected}["claims"] == ("reputation < 0.9 (is 0.5)",)
    async with fake.client("origin", fake.token("alice")) as client:
        listed = {n["name"]: n for n in (await client.get("/v1/nodes")).json()["nodes"]}
    assert listed["claims"]["reputation"] == 0.5 and listed["attested"]["reputation"] == 0.95
    assert listed["claims"]["reputation_evidence"] == {"ok": 0, "failed": 0, "observers": 0, "prior": 0.5}


async def test_failing_starts_lose_reputation_in_others_eyes_and_fixed_nodes_earn_it_back(fake: FakeCluster) -> None:
    flaky = fake.add("flaky", price=0.001, attested=0.95)
    fake.add("steady", price=0.02, attested=0.95)
    origin = fake.add("origin", price=0.5, attested=0.95)
    other = fake.add("other", price=0.6, attested=0.95)
    flaky.manager._drivers["exec"] = BrokenDriver()
    for _ in range(3):  # the cheapest node, so tried first until it is ejected
        placement = await origin.scheduler.place(SPEC, COST)
        assert placement.node != "flaky" and placement.attempts[0].node == "flaky"
    assert origin.reputation.score("flaky") < 0.9
    # Another node learns it from origin's view, through the node-only route.
    other.reputation.sample = 10
    await other.reputation.exchange()
    assert other.reputation.score("flaky") < 0.9
    assert "flaky" not in [r.node for r in other.scheduler.decide(SPEC, HIGH_TRUST).ranked]
    # The record is signed by the observer (ECDSA P-256, 64 bytes r‖s) and verifies with its key, also as any
    # node knows it: the certified 33-byte point in the observer's beacon. Altered, or with another key, it does not.
    record = origin.reputation.log.records("flaky")[-1]
    assert not record.ok and record.verify(origin.reputation.log._key.public_key())  # type: ignore[union-attr]
    assert len(base64.urlsafe_b64decode(record.signature + "==")) == 64
    gossiped = decode(fake.beacons["origin"], "origin", time.time()).public_key
    assert len(gossiped) == 33 and record.verify(gossiped)
    assert not dataclasses.replace(record, ok=True).verify(gossiped)
    assert not record.verify(decode(fake.beacons["other"], "other", time.time()).public_key)
    # Fixed, and once the old failures leave the window, it is back at its prior; successes build on it.
    flaky.manager._drivers["exec"] = MemoryDriver()
    origin.reputation.log.window = 0.0
    other.reputation._views.clear()
    assert origin.reputation.score("flaky") == 0.95
    origin.reputation.log.window = 3600.0
    origin.scheduler.outliers._nodes.clear()
    placement = await origin.scheduler.place(SPEC, COST)  # the cheapest again, and it works now
    assert placement.node == "flaky" and origin.reputation.score("flaky") > 0.95


def test_a_flood_of_successes_is_one_moment_of_evidence_and_cannot_push_failures_out() -> None:
    # Counting each success made reputation rich-get-richer (a burst of 200 spawns on three equal nodes went
    # 159/41/0) and let anyone pump a node, or wash its failures out of the per-peer record cap, with tiny spawns.
    now = [1_000_000.0]
    me = Reputation("n1", None, transport=None, peers=lambda: ["n2"], prior=lambda n: None,  # type: ignore[arg-type]
                    clock=lambda: now[0])
    me.observe("n2", False, "attempt timeout")
    recorded = [me.observe("n2", True, "attempt ok") for _ in range(300)]
    assert sum(r is not None for r in recorded) == 1
    assert me.log.evidence("n2") == Evidence(successes=1, failures=1)
    now[0] += 61.0  # the next minute's success counts again
    assert me.observe("n2", True, "attempt ok") is not None
    assert me.log.evidence("n2") == Evidence(successes=2, failures=1)


def test_unreachable_and_stale_nodes_lose_reputation_once_per_incident(fake: FakeCluster) -> None:
    # Issue 11's evidence list: probes unanswered and beacons that failed, besides placement attempts.
    me = Reputation("n1", None, transport=None, peers=lambda: ["n2"], prior=lambda n: None)  # type: ignore[arg-type]
    me.probe_result("n2", None)  # one lost probe: the link's loss, not the node's failure
    assert me.log.evidence("n2") == Evidence(0, 0)
    for _ in range(10):
        me.probe_result("n2", None)  # unreachable: one incident, not ten
    assert me.log.evidence("n2") == Evidence(0, 1)
    me.probe_result("n2", 1.5)  # an answer is no evidence of reliability either
    assert me.log.evidence("n2") == Evidence(0, 1)
    # A node's own signed beacon gone stale (it froze, or stopped refreshing), read on every view read: counted
    # once, by the node that reads it.
    fake.add("a")
    fake.add("b")
    a = fake["a"]
    a.view.nodes()  # read while fresh: b's beacon verified and admitted
    a.view._clock = lambda: time.time() + 3600  # an hour later, nothing new from b
    for _ in range(5):
        a.view.nodes()
    assert a.reputation.log.evidence("b") == Evidence(0, 1)
    assert a.reputation.log.records("b")[0].what == "beacon stale"


async def test_views_are_asked_of_the_peers_the_probes_keep_connections_to(fake: FakeCluster) -> None:
    """At 100 nodes a random peer's connection had long been closed (kept 60 s), so each exchange cost a TLS
    handshake on both sides: a third of an idle agent's handshakes (py-spy, issue 10). The probe panel's
    connections are kept open by the probes; the exchange asks peers of that panel."""
    nodes = [fake.add(f"n{i:02d}") for i in range(30)]
    origin = nodes[0]
    peers = origin.view.peers(exclude=origin.name)
    assert len(peers) == 29
    panel = set(origin.probes.panel(peers))
    assert len(panel) == 16  # a cluster larger than the panel
    asked: list[str] = []
    request = origin.reputation._transport.request

    async def recording(node: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(node)
        return await request(node, *args, **kwargs)

    origin.reputation._transport.request = recording  # type: ignore[method-assign]
    for _ in range(20):
        await origin.reputation.exchange()
    assert len(asked) == 60 and set(asked) <= panel
    assert len(set(asked)) >= 10  # still a random draw among the panel's 16
    assert len(origin.reputation._views) >= 10  # and their views were taken


def test_exchanges_take_the_panel_in_turn_so_each_peer_is_asked_within_the_keep_alive() -> None:
    """Drawn at random each round, a panel peer was asked again after 160 s on average and often much later, past
    the connections' keep-alive: at 100 nodes nearly every exchange opened a new TLS connection. In turn, in an
    order of the node's own, each of 16 panel peers is asked every 5 or 6 rounds (30 s each)."""
    from hypercore.reputation.service import EXCHANGE_S
    from hypercore.transport import KEEPALIVE_S

    panel = [f"p{i:02d}" for i in range(16)]
    members = ["n1", *panel]
    me = Reputation("n1", None, transport=None, peers=lambda: members, prior=lambda n: None,  # type: ignore[arg-type]
                    sample=3)
    asked: dict[str, list[int]] = {}
    for round_ in range(48):
        chosen = me.exchange_peers()
        assert len(chosen) == len(set(chosen)) == 3 and "n1" not in chosen
        for peer in chosen:
            asked.setdefault(peer, []).append(round_)
    assert set(asked) == set(panel)
    gaps = [b - a for rounds in asked.values() for a, b in zip(rounds, rounds[1:])]
    assert max(gaps) <= 6 and max(gaps) * EXCHANGE_S + 30 <= KEEPALIVE_S  # with room for the loop's own delays
    orders = {tuple(Reputation("n1", None, transport=None, peers=lambda: members,  # type: ignore[arg-type]
                               prior=lambda n: None).exchange_peers()) for _ in range(20)}
    assert len(orders) > 1  # each node's own random order, not the panel's

    members[1:3] = ["q1", "q2"]  # the panel changed: a new order over the new panel
    seen = {peer for _ in range(6) for peer in me.exchange_peers()}
    assert {"q1", "q2"} <= seen and not {"p00", "p01"} & seen
    members[:] = ["n1", "p05"]  # fewer peers than the sample: all of them, each round
    assert me.exchange_peers() == ["p05"] and me.exchange_peers() == ["p05"]
