"""Refusals, killed nodes, rogue members and policy reloads on real clusters."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hypercore.devcluster import Cluster, free_port, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
COST = json.loads((EXAMPLES / "cost-optimized.json").read_text())
pytestmark = pytest.mark.cluster


def test_a_node_without_room_is_never_tried_and_a_killed_top_node_is_moved_past(cluster: Cluster) -> None:
    # "small" is the cheapest node but offers half a core: the default one-core
    # spawn does not fit it, so the decision rejects it and no attempt is wasted on it.
    cluster.add("small", "--enable-exec", "--disable-containers", "--beacon-price", "0.005", "--capacity-cpu", "0.5")
    cluster.add("second", "--enable-exec", "--disable-containers", "--beacon-price", "0.010")
    cluster.add("third", "--enable-exec", "--disable-containers", "--beacon-price", "0.030")
    cluster.wait_converged()
    r = cluster["third"].post("/v1/workloads", {"spec": {"command": "sleep 30"}, "policy": COST})
    assert r.status_code == 201, r.text
    body = r.json()
    assert [x["node"] for x in body["decision"]["ranked"]] == ["second", "third"]
    assert {x["node"]: x["reasons"] for x in body["decision"]["rejected"]}["small"] == [
        "insufficient cpu (free 0.5 of 0.5, asks 1)"]
    assert [(a["node"], a["outcome"]) for a in body["attempts"]] == [("second", "ok")]

    # SIGKILL "second" and spawn at once, before Serf notices: the attempt on it
    # fails with a connection error and "third" takes the workload.
    cluster["second"].kill()
    r = cluster["third"].post("/v1/workloads", {"spec": {"command": "sleep 30"}, "policy": COST})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["node"] == "third"
    outcomes = {a["node"]: a["outcome"] for a in body["attempts"]}
    assert outcomes["third"] == "ok" and outcomes.get("second", "error") == "error"

    # Once Serf marks it failed, the killed node is no candidate at all.
    wait_for(lambda: cluster["third"].nodes()["second"]["status"] == "failed", 30, "serf to mark 'second' failed")
    decision = cluster["third"].post("/v1/placements", {"policy": COST, "spec": {"command": "true"}}).json()
    assert "second" not in [x["node"] for x in decision["ranked"]]
    assert {"node": "second", "reasons": ["not alive (status failed)"]} in decision["rejected"]
    assert "1 not alive" in decision["summary"]


def test_when_every_attempt_fails_the_error_lists_each_node(cluster: Cluster) -> None:
    # Only b and c can run commands, and both die just before the spawn (before Serf notices).
    cluster.add("a", "--disable-containers")
    cluster.add("b", "--enable-exec", "--disable-containers")
    cluster.add("c", "--enable-exec", "--disable-containers")
    cluster.wait_converged()
    cluster["b"].kill()
    cluster["c"].kill()
    r = cluster["a"].post("/v1/workloads", {"spec": {"command": "sleep 30"}})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "placement_failed"
    assert sorted((a["node"], a["outcome"]) for a in err["attempts"]) == [("b", "error"), ("c", "error")]
    assert "b: error" in err["message"] and "c: error" in err["message"]
    assert {x["node"]: x["reasons"] for x in err["decision"]["rejected"]}["a"] == ["missing capability exec"]


def _rogue_serf(tmp: Path, join: str, name: str, tags: dict[str, str], key: str) -> subprocess.Popen[bytes]:
    """A plain serf agent holding the (leaked) gossip key `key`: it joins, but holds no certificate."""
    args = ["serf", "agent", f"-node={name}", f"-bind=127.0.0.1:{free_port()}", f"-rpc-addr=127.0.0.1:{free_port()}",
            f"-join={join}", "-profile=local", "-log-level=warn", f"-encrypt={key}"]
    tagfile = tmp / f"{name}.tags.json"
    tagfile.write_text(json.dumps(tags))
    args.append(f"-tags-file={tagfile}")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_forged_and_malformed_beacons_from_rogue_members_are_ignored(cluster: Cluster, tmp_path: Path) -> None:
    honest = cluster.add("honest", "--enable-exec", "--disable-containers", "--beacon-price", "0.040")
    cluster.wait_converged()
    real = honest.nodes()["honest"]
    # A rogue copies honest's signed tags but lowers the price: the signature
    # no longer matches (it also covers the member name, so even an unmodified
    # copy fails on another member).
    serf_tags = json.loads(subprocess.run(
        ["serf", "members", f"-rpc-addr=127.0.0.1:{honest.rpc_port}", "-format=json",
         f"-rpc-auth={json.loads((honest.data_dir / 'serf' / 'serf-agent.json').read_text())['rpc_auth']}"],
        capture_output=True, text=True, timeout=10, check=True).stdout)["members"]
    tags = next(m["tags"] for m in serf_tags if m["name"] == "honest")
    forged = dict(tags, m=tags["m"].replace("0.04", "0.0001"))
    copied = dict(tags)
    garbage = {"hc": tags["hc"], "api": "127.0.0.1:1", "m": "x" * 300, "c": "exec", "k": "A" * 43, "sig": "B" * 86}
    rogues = [
        _rogue_serf(tmp_path, honest.gossip_addr, "rogue-forged", forged, cluster.pki.gossip_key),
        _rogue_serf(tmp_path, honest.gossip_addr, "rogue-copied", copied, cluster.pki.gossip_key),
        _rogue_serf(tmp_path, honest.gossip_addr, "rogue-garbage", garbage, cluster.pki.gossip_key),
    ]
    try:
        def rogues_seen() -> dict:
            view = honest.nodes()
            return view if all(f"rogue-{k}" in view for k in ("forged", "copied", "garbage")) else {}

        view = wait_for(rogues_seen, 20, "rogue members to join")
        for name in ("rogue-forged", "rogue-copied", "rogue-garbage"):
            assert view[name]["status"] == "alive"
            assert view[name]["beacon_id"] is None and view[name]["price_per_gb"] is None
            assert view[name]["problem"].startswith("not admitted: signature"), view[name]["problem"]
            assert view[name]["admitted"] is False
        assert view["honest"]["beacon_id"] == real["beacon_id"]
        metrics = honest.get("/metrics").text
        assert 'hypercore_beacon_invalid_total{cause="signature"} 3.0' in metrics
        # Placement never picks a node without verified beacon data.
        for _ in range(3):
            r = honest.post("/v1/workloads", {"spec": {"command": "sleep 30", "cpu": 0.1}, "policy": COST})
            assert r.status_code == 201 and r.json()["node"] == "honest", r.text
        decision = r.json()["decision"]
        considered = {x["node"] for x in decision["ranked"]} | {x["node"] for x in decision["rejected"]}
        assert not considered & {"rogue-forged", "rogue-copied", "rogue-garbage"}  # not admitted: not even a candidate
        # Logged once per node and cause, not on every read.
        assert honest.log().count('msg="no beacon data for node" node=rogue-forged') == 1
    finally:
        for p in rogues:
            p.kill()
            p.wait(5)


def test_sighup_reloads_the_cluster_policy_and_keeps_it_on_a_bad_file(cluster: Cluster, tmp_path: Path) -> None:
    policy_file = tmp_path / "cluster-policy.json"
    policy_file.write_text((EXAMPLES / "balanced.json").read_text())
    node = cluster.add("solo", "--enable-exec", "--disable-containers", "--cluster-policy", str(policy_file))
    assert node.get("/v1/policy").json()["name"] == "balanced"

    policy_file.write_text((EXAMPLES / "high-trust.json").read_text())
    node.signal(signal.SIGHUP)
    wait_for(lambda: node.get("/v1/policy").json()["name"] == "high-trust", 10, "reload of a good file")
    assert 'msg="loaded policy" name=high-trust mode=enforce' in node.log()

    policy_file.write_text('{"name": "broken", "rules": {"max_latncy_ms": 5}}')
    node.signal(signal.SIGHUP)
    wait_for(lambda: "policy reload failed" in node.log(), 10, "the reload failure to be logged")
    assert node.get("/v1/policy").json()["name"] == "high-trust"
    assert "max_latncy_ms" in node.log()
    assert node.proc is not None and node.proc.poll() is None


def test_sigterm_leaves_the_cluster_and_exits_zero(cluster: Cluster) -> None:
    a = cluster.add("a", "--enable-exec", "--disable-containers")
    b = cluster.add("b", "--enable-exec", "--disable-containers")
    cluster.wait_converged()
    started = time.monotonic()
    assert b.stop() == 0
    assert time.monotonic() - started < 15
    wait_for(lambda: a.nodes()["b"]["status"] == "left", 15, "b to be seen as left")
