"""Failover's pure parts: buddy choice, the replica store, respawn ids, the flag."""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from hypercore.failover import (
    Manifest,
    ManifestEntry,
    Move,
    ReplicaStore,
    buddies_of,
    holder_rank,
    moved_reason,
    rendezvous_rank,
    respawn_id,
)
from hypercore.placement import workload_id_for
from hypercore.workload import WorkloadSpec

W1 = "11111111-1111-4111-8111-111111111111"
W2 = "22222222-2222-4222-8222-222222222222"


def manifest(owner: str, version: int, *ids: str) -> Manifest:
    entries = [ManifestEntry(id=i, spec=WorkloadSpec(command="sleep 300", cpu=0.1), policy=None, request_id=None,
                             state="running") for i in ids]
    return Manifest(owner=owner, version=version, generated_at=0.0, workloads=entries)


def test_buddies_are_the_top_k_by_rendezvous_hash_and_never_the_owner() -> None:
    nodes = [f"n{i}" for i in range(10)]
    for owner in nodes:
        buddies = buddies_of(owner, nodes)
        assert len(buddies) == 2 and owner not in buddies
        assert buddies == [n for n in rendezvous_rank(owner, nodes) if n != owner][:2]
    assert buddies_of("n0", ["n0", "n1"]) == ["n1"]
    assert buddies_of("n0", ["n0"]) == []


def test_holding_costs_k_manifests_on_average_and_a_departure_moves_only_its_own() -> None:
    nodes = [f"node-{i}" for i in range(200)]
    held = Counter(b for owner in nodes for b in buddies_of(owner, nodes))
    assert sum(held.values()) / len(nodes) == 2
    assert max(held.values()) <= 10  # no hot spot
    before = {o: buddies_of(o, nodes) for o in nodes}
    gone = "node-7"
    after = {o: buddies_of(o, [n for n in nodes if n != gone]) for o in nodes if o != gone}
    changed = [o for o in after if after[o] != before[o]]
    assert all(gone in before[o] for o in changed)  # only owners that lost a buddy get a new one


def test_flagged_nodes_hold_first_and_plain_order_when_all_or_none_are_flagged() -> None:
    nodes = ["a", "b", "c", "d", "e"]
    assert holder_rank("a", nodes, nodes) == holder_rank("a", nodes, ()) == [n for n in rendezvous_rank("a", nodes) if n != "a"]
    assert set(buddies_of("a", nodes, flagged={"d", "e"})) == {"d", "e"}
    assert buddies_of("a", nodes, flagged={"e"})[0] == "e"


def test_respawn_ids_derive_from_the_original_id() -> None:
    assert respawn_id(W1) == workload_id_for(f"respawn:{W1}") == respawn_id(W1)
    assert respawn_id(W1) not in (W1, respawn_id(W2))
    assert moved_reason("b", W2) == f"moved to b as {W2} while this node was failed"


def test_replica_store_keeps_the_newest_manifest_durably_in_a_private_file(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "replicas.sqlite3").st_mode) == 0o600
    assert store.put(manifest("a", 5, W1, W2)) == ("stored", 5)
    assert store.put(manifest("a", 4)) == ("stale", 5)
    assert store.put(manifest("a", 5, W1, W2)) == ("refreshed", 5)
    assert [w.id for w in store.get("a").workloads] == [W1, W2]  # type: ignore[union-attr]
    assert store.put(manifest("a", 6, W2)) == ("stored", 6)
    store.close()
    again = ReplicaStore(tmp_path)
    assert [w.id for w in again.get("a").workloads] == [W2]  # type: ignore[union-attr]
    assert [o for o, _v, _t in again.owners()] == ["a"]
    again.delete("a")
    assert again.get("a") is None


def test_versions_only_grow_across_restarts_and_jump_above_a_buddys(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    v1 = store.next_version()
    v2 = store.next_version()
    assert v2 > v1
    store.close()
    store = ReplicaStore(tmp_path)
    v3 = store.next_version()
    assert v3 > v2
    assert store.next_version(above=v3 + 1000) > v3 + 1000


def test_moves_are_recorded_once_delivered_and_pruned(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    move = Move(owner="a", original_id=W1, new_id=respawn_id(W1), node="b", moved_at=1000.0, by="c")
    assert store.record_move(move) is True
    assert store.record_move(move.model_copy(update={"by": "d"})) is False
    assert [m.by for m in store.moves(owner="a")] == ["c"]
    assert [m.original_id for m in store.moves(undelivered=True)] == [W1]
    store.mark_delivered([W1], now=2000.0)
    assert store.moves(undelivered=True) == []
    assert store.prune_moves(now=2000.0 + 10) == 0
    assert store.prune_moves(now=2000.0 + 3601) == 1
    # Moves replicated inside another node's manifest answer for their owner too.
    store.put(Manifest(owner="c", version=1, generated_at=0.0, moves=[move]))
    assert [m.original_id for m in store.moves_in_replicas("a")] == [W1]
    assert store.moves_in_replicas("c") == []


def test_the_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercore.agent
    import hypercore.logfmt
    import hypercore.membership
    from hypercore.cli.cluster import cluster_group

    seen = {}

    class FakeAgent:
        def __init__(self, config: hypercore.agent.AgentConfig) -> None:
            seen["config"] = config

        async def run(self) -> None:
            return None

    monkeypatch.setattr(hypercore.agent, "NodeAgent", FakeAgent)
    monkeypatch.setattr(hypercore.membership, "find_serf_binary", lambda: "/usr/bin/serf")
    monkeypatch.setattr(hypercore.logfmt, "setup", lambda level: None)
    runner = CliRunner()
    assert runner.invoke(cluster_group, ["run", "--node-name", "x"]).exit_code == 0
    assert seen["config"].respawn_on_node_failure is False
    result = runner.invoke(cluster_group, ["run", "--node-name", "x"], env={"HYPERCORE_RESPAWN_ON_NODE_FAILURE": "1"})
    assert result.exit_code == 0, result.output
    assert seen["config"].respawn_on_node_failure is True
    assert runner.invoke(cluster_group, ["run", "--node-name", "x", "--respawn-on-node-failure"]).exit_code == 0
    assert seen["config"].respawn_on_node_failure is True
