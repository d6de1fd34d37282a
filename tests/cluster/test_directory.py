"""The placement directory on real agents (serf, mutual TLS, SQLite, exec workloads): requests per spawn,
counted by the agents themselves; an owner that dies after or during its placement.

Requests are counted from each agent's `hypercore_node_requests_total{route}`;
copies from /proc (live `sleep` processes whose environment names the workload).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hypercore.devcluster import USER, Cluster, live_workload_processes, wait_for
from hypercore.placement import rendezvous_rank, request_rank, user_request_id, workload_id_for
from hypercore.placement.directory import holders_of, pointer_of
from hypercore.placement.directory_sync import FLUSH_S

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
EXEC = ("--enable-exec", "--disable-containers")
SPEC = {"command": "sleep 300", "cpu": 0.1}
# The routes a spawn uses (what else a node sends meanwhile — probes, reputation, failover manifests — is not
# the spawn's: it runs on its own clock whether or not anyone spawns).
SPAWN_ROUTES = ("POST /v1/local/spawn", "PUT /v1/local/directory", "GET /v1/local/directory/{key}",
                "POST /v1/local/workloads", "GET /v1/local/workloads/{id}", "GET /v1/local/workloads",
                "DELETE /v1/local/workloads/{id}", "GET /v1/local/placements/{id}", "GET /v1/local/entries/{id}",
                "GET /v1/local/workloads/{id}/logs")
pytestmark = pytest.mark.cluster


def sent(cluster: Cluster, names: list[str]) -> Counter[tuple[str, str]]:
    """Node-to-node requests each node sent so far, by (node, route)."""
    out: Counter[tuple[str, str]] = Counter()
    for name in names:
        for family in text_string_to_metric_families(cluster[name].get("/metrics").text):
            if family.name == "hypercore_node_requests":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        out[(name, sample.labels["route"])] += int(sample.value)
    return out


def spawn_requests(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    return Counter({k: after[k] - before[k] for k in after if k[1] in SPAWN_ROUTES and after[k] > before[k]})


def _five_priced(cluster: Cluster) -> list[str]:
    """Five exec nodes n1–n5, n1 the cheapest (where COST places), converged."""
    names = ["n1", "n2", "n3", "n4", "n5"]
    for i, name in enumerate(names):
        cluster.add(name, *EXEC, "--beacon-price", f"0.0{i + 1}")
    cluster.wait_converged()
    return names


def test_one_spawn_with_a_request_id_costs_at_most_five_node_requests_on_five_nodes(cluster: Cluster) -> None:
    names = _five_priced(cluster)
    # Sent to n5, owned by n3, placed on n1: the forward, the claim and the attempt all cross the network.
    rid = next(r for r in (f"cnt-{uuid.uuid4().hex}" for _ in range(2000))
               if (rank := request_rank(user_request_id(USER, r), names))[0] == "n3"
               and "n1" not in rank[:3] and "n5" not in rank[:3])
    body = {"spec": SPEC, "policy": COST, "request_id": rid}
    before = sent(cluster, names)
    r = cluster["n5"].post("/v1/workloads", body)
    assert r.status_code == 201 and r.json()["node"] == "n1", r.text
    time.sleep(FLUSH_S + 1)  # a fixed wait is right here: whatever the directory sends later counts too
    first = spawn_requests(before, sent(cluster, names))
    buddies = holders_of(user_request_id(USER, rid), names)[1:]
    assert first == Counter({("n5", "POST /v1/local/spawn"): 1, ("n3", "PUT /v1/local/directory"): 2,
                             ("n3", "POST /v1/local/workloads"): 1}), first
    assert sum(first.values()) <= 5
    for buddy in buddies:  # the claim is on both buddies, naming n1
        held = cluster[buddy].node_request("GET", f"/v1/local/directory/{user_request_id(USER, rid)}")
        assert held.status_code == 200 and held.json()["trying"] == ["n1"], held.text

    # A retry: the forward, and one question to the node the owner's entry names.
    before = sent(cluster, names)
    again = cluster["n4"].post("/v1/workloads", body)
    assert again.status_code == 200 and again.json()["existing"] is True, again.text
    retry = spawn_requests(before, sent(cluster, names))
    assert retry == Counter({("n4", "POST /v1/local/spawn"): 1, ("n3", "GET /v1/local/workloads/{id}"): 1}), retry
    assert live_workload_processes()[r.json()["id"]] == 1
    # The forwarded answer carries the top of the ranking and counts, not every node.
    decision = r.json()["decision"]
    assert len(decision["ranked"]) == 5 and decision["ranked_more"] == 0 and decision["rejected_more"] == 0
    # Its status, logs and stop asked of n2, which neither received, placed nor runs it (a buddy, not the first):
    # the first holder's entry names n1. n2 once asked every node, the requests growing with the cluster.
    wid = r.json()["id"]
    before = sent(cluster, names)
    assert cluster["n2"].get(f"/v1/workloads/{wid}").status_code == 200
    assert cluster["n2"].get(f"/v1/workloads/{wid}/logs").status_code == 200
    stopped = cluster["n2"].delete(f"/v1/workloads/{wid}")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped", stopped.text
    lookups = spawn_requests(before, sent(cluster, names))
    assert lookups == Counter({("n2", "GET /v1/local/entries/{id}"): 1, ("n2", "GET /v1/local/workloads/{id}"): 4,
                               ("n2", "GET /v1/local/workloads/{id}/logs"): 1,
                               ("n2", "DELETE /v1/local/workloads/{id}"): 1}), lookups
    print(f"\nnode-to-node requests: spawn {sum(first.values())}, retry {sum(retry.values())} "
          f"(before the directory: about N + 2 = 7); status, logs and stop from another node "
          f"{sum(lookups.values())} (before: about 3 N + 3 = 18)")


def test_a_request_id_naming_its_home_is_placed_there_and_found_there_and_after_it(cluster: Cluster) -> None:
    # What every `hypercore cluster spawn` sends since the thirteenth session: "<uuid>@<the node asked>". The node
    # asked places it itself (no forward to an owner the hash picks, maybe across the world) and claims it on its
    # own buddies; a lookup by workload id finds the entry where it looks; a retry sent elsewhere is forwarded to
    # the home; once the home is dead its first buddy owns the request and finds the copy.
    names = _five_priced(cluster)
    # An id whose hash alone would make another node its owner.
    rid = next(r for r in (f"home-{uuid.uuid4().hex}@n5" for _ in range(2000))
               if request_rank(user_request_id(USER, r), names)[0] != "n5")
    key = user_request_id(USER, rid)
    holders, pointer = holders_of(key, names), pointer_of(key, names)
    assert holders[0] == "n5" and holders[1:] == [x for x in rendezvous_rank("n5", names) if x != "n5"][:2]
    body = {"spec": SPEC, "policy": COST, "request_id": rid}
    before = sent(cluster, names)
    r = cluster["n5"].post("/v1/workloads", body)
    assert r.status_code == 201 and r.json()["node"] == "n1", r.text
    wid = r.json()["id"]
    time.sleep(FLUSH_S + 1)
    first = spawn_requests(before, sent(cluster, names))
    # No forward: the claim on n5's two buddies, the attempt, and (with the flush) the copy of the entry for
    # the node a lookup by workload id asks first, when that is none of the holders.
    assert first == Counter({("n5", "PUT /v1/local/directory"): 2 + (pointer is not None),
                             ("n5", "POST /v1/local/workloads"): 1}), first
    for holder in [*holders[1:], *([pointer] if pointer else [])]:
        held = cluster[holder].node_request("GET", f"/v1/local/directory/{key}")
        assert held.status_code == 200 and held.json()["trying"] == ["n1"], (holder, held.text)
    # Its status asked of a node that neither placed nor runs it: one entry, then the node it names (asked where
    # it runs, then for its status); no fan-out.
    via = next(n for n in names if n not in holders and n != "n1")
    before = sent(cluster, names)
    assert cluster[via].get(f"/v1/workloads/{wid}").status_code == 200
    lookup = spawn_requests(before, sent(cluster, names))
    assert lookup == Counter({(via, "GET /v1/local/entries/{id}"): 1, (via, "GET /v1/local/workloads/{id}"): 2}) \
        or lookup == Counter({(via, "GET /v1/local/workloads/{id}"): 2}), lookup  # none when via is that first node
    # Sent to another node: forwarded to the home, which asks the node its entry names.
    before = sent(cluster, names)
    again = cluster[via].post("/v1/workloads", body)
    assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "n1", again.text
    assert spawn_requests(before, sent(cluster, names)) == Counter(
        {(via, "POST /v1/local/spawn"): 1, ("n5", "GET /v1/local/workloads/{id}"): 1})
    # The home dead: its first buddy owns the request id and finds the copy; nothing new starts.
    cluster["n5"].kill()
    _wait_failed(cluster, "n5", names)
    alive = [n for n in names if n != "n5"]
    assert holders_of(key, alive)[:2] == holders[1:]
    third = cluster[via].post("/v1/workloads", body)
    assert third.status_code == 200 and third.json()["existing"] is True and third.json()["node"] == "n1", third.text
    assert live_workload_processes()[wid] == 1


def _killed_owner_cluster(cluster: Cluster, owner_flags: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """Five nodes: w (the cheapest, where COST places), o (owner of the returned request id), b1–b3.

    The request id's holders are o and two of the b's; after o dies, the new holders are the three b's, so w
    is never a holder and the retry through w is forwarded to the new owner.
    """
    cluster.add("w", *EXEC, "--beacon-price", "0.005")
    cluster.add("o", *EXEC, "--beacon-price", "0.04", *owner_flags)
    for name in ("b1", "b2", "b3"):
        cluster.add(name, *EXEC, "--beacon-price", "0.03")
    cluster.wait_converged()
    names = ["w", "o", "b1", "b2", "b3"]
    rid = next(r for r in (f"own-{uuid.uuid4().hex}" for _ in range(2000))
               if request_rank(user_request_id(USER, r), names)[0] == "o"
               and request_rank(user_request_id(USER, r), names)[-1] == "w")
    return rid, names


def _unread_bytes(port: int, sender_pid: int) -> int:
    """Bytes process `sender_pid` sent to local TCP `port` that the receiving process has not read yet: the
    receive queues (/proc/net/tcp) of the port's connections whose other end is one of the sender's sockets."""
    inodes = set()
    for fd in Path(f"/proc/{sender_pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    rows = [line.split() for table in ("/proc/net/tcp", "/proc/net/tcp6")
            for line in Path(table).read_text().splitlines()[1:]]

    def port_of(address: str) -> int:
        return int(address.rsplit(":", 1)[1], 16)

    sender_ports = {port_of(r[1]) for r in rows if r[9] in inodes and port_of(r[2]) == port}
    return sum(int(r[4].split(":")[1], 16) for r in rows if port_of(r[1]) == port and port_of(r[2]) in sender_ports)


def _wait_failed(cluster: Cluster, dead: str, names: list[str]) -> None:
    for name in names:
        if name != dead:
            wait_for(lambda n=name: cluster[n].nodes()[dead]["status"] == "failed", 30, f"{name} to see {dead} failed")


def test_when_the_owner_dies_its_buddy_owns_the_request_and_finds_the_copy(cluster: Cluster) -> None:
    rid, names = _killed_owner_cluster(cluster)
    body = {"spec": SPEC, "policy": COST, "request_id": rid}
    first = cluster["o"].post("/v1/workloads", body)
    assert first.status_code == 201 and first.json()["node"] == "w", first.text
    cluster["o"].kill()
    _wait_failed(cluster, "o", names)
    alive = [n for n in names if n != "o"]
    new_owner = holders_of(user_request_id(USER, rid), alive)[0]
    before = sent(cluster, alive)
    again = cluster["w"].post("/v1/workloads", body)
    assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "w", again.text
    made = spawn_requests(before, sent(cluster, alive))
    # Forwarded to the buddy that owns it now; it asked w alone (no fan-out) and made no attempt.
    assert made == Counter({("w", "POST /v1/local/spawn"): 1, (new_owner, "GET /v1/local/workloads/{id}"): 1}), made
    assert live_workload_processes()[first.json()["id"]] == 1


def test_an_attempt_in_flight_when_the_owner_died_is_found_on_the_node_its_claim_named(cluster: Cluster) -> None:
    # o waits up to 30 s for its attempt: w is frozen under it, then thaws after o is dead and starts the copy.
    # The attempt must reach w's socket while w is frozen, so o needs a connection to w open beforehand: a new
    # one could not finish its TLS handshake with a frozen w before o died, and w would never receive the
    # attempt (how this test failed under load in CI, three times). HTTPS probes used to open that connection;
    # probes are UDP datagrams now, so a first spawn that o places on w opens it (kept alive for minutes).
    rid, names = _killed_owner_cluster(cluster, ("--placement-timeout", "30", "--probe-interval", "60"))
    key = user_request_id(USER, rid)
    wid = workload_id_for(key)
    buddies = holders_of(key, names)[1:]
    body = {"spec": SPEC, "policy": COST, "request_id": rid}
    w, o = cluster["w"], cluster["o"]
    first_rid = next(r for r in (f"first-{uuid.uuid4().hex}" for _ in range(2000))
                     if request_rank(user_request_id(USER, r), names)[0] == "o")
    first = o.post("/v1/workloads", {"spec": SPEC, "policy": COST, "request_id": first_rid})
    assert first.status_code == 201 and first.json()["node"] == "w", first.text
    w.signal(signal.SIGSTOP)
    try:
        answer: list[object] = []

        def send() -> None:
            try:
                answer.append(o.post("/v1/workloads", body, timeout=60))
            except httpx.HTTPError as exc:  # o dies under it
                answer.append(exc)

        sender = threading.Thread(target=send)
        assert o.proc is not None and _unread_bytes(w.http_port, o.proc.pid) == 0  # what the wait below measures
        sender.start()

        def claimed() -> bool:
            held = [cluster[b].node_request("GET", f"/v1/local/directory/{key}") for b in buddies]
            return all(h.status_code == 200 and h.json()["state"] == "placing" and h.json()["trying"] == ["w"]
                       for h in held)

        wait_for(claimed, 15, "o's claim naming w on both buddies")
        # The claim is on the buddies before o sends the attempt: killed as soon as the claim showed, o had
        # sometimes not written it yet under load (the failure in CI after the first spawn was added).
        wait_for(lambda: _unread_bytes(w.http_port, o.proc.pid) > 0, 15, "o's attempt waiting in frozen w's socket")
        o.kill()  # the attempt on w is in flight
        sender.join(30)
        assert answer and not isinstance(answer[0], httpx.Response), answer
    finally:
        w.signal(signal.SIGCONT)
    # Thawed, w reads the attempt o sent (its deadline has not passed) and starts the workload.
    try:
        wait_for(lambda: live_workload_processes()[wid] == 1, 30, "w to start the attempt it received frozen")
    except AssertionError as exc:  # it failed once in CI under load: say what w did with the attempt
        raise AssertionError(f"{exc}\n--- w's log (tail) ---\n{w.log()[-4000:]}") from None
    _wait_failed(cluster, "o", names)
    alive = [n for n in names if n != "o"]
    new_owner = holders_of(key, alive)[0]
    assert new_owner in buddies
    before = sent(cluster, alive)
    again = cluster["b1" if new_owner != "b1" else "b2"].post("/v1/workloads", body)
    assert again.status_code == 200 and again.json()["existing"] is True and again.json()["node"] == "w", again.text
    made = spawn_requests(before, sent(cluster, alive))
    assert made[(new_owner, "POST /v1/local/workloads")] == 0, made  # no second attempt anywhere
    assert made[(new_owner, "GET /v1/local/workloads/{id}")] == 1, made  # the one node the claim named
    # A fixed wait is right here: it checks that no second copy appears later.
    time.sleep(2)
    assert live_workload_processes()[wid] == 1
