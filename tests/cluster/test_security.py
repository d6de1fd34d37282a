"""Only admitted nodes, only authorized users (issue 8), on real clusters over mutual TLS.

Each test here is a finding of an attack on the earlier design, turned into a
check: rogue gossip members, user tokens on node routes, plain HTTP, forged
forwarding headers, foreign Host headers, secrets on command lines, and one
user acting on another's workloads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon import keys
from hypercore.beacon.tags import Admission, Beacon, encode
from hypercore.devcluster import Cluster, Pki, free_port, wait_for
from hypercore.identity.pki import NodeIdentity, admission_message, load_ca_key

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
EXEC = ("--enable-exec", "--disable-containers")
pytestmark = pytest.mark.cluster


class Listener:
    """The rogue's 'API': counts the TCP connections it accepts and the UDP datagrams (probes,
    hypercore.beacon.echo) that reach the same port number."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.setblocking(False)
        self.connections = 0
        self.datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._count_datagrams()
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def _count_datagrams(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.udp.recv(2048)
                self.datagrams += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._count_datagrams()
        self.sock.close()
        self.udp.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


def rogue_serf(tmp: Path, join: str, name: str, tags: dict[str, str], key: str | None) -> subprocess.Popen[bytes]:
    args = ["serf", "agent", f"-node={name}", f"-bind=127.0.0.1:{free_port()}", f"-rpc-addr=127.0.0.1:{free_port()}",
            f"-join={join}", "-profile=local", "-log-level=warn"]
    if key is not None:
        args.append(f"-encrypt={key}")
    tagfile = tmp / f"{name}.tags.json"
    tagfile.write_text(json.dumps(tags))
    return subprocess.Popen([*args, f"-tags-file={tagfile}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(5)


def forged_tags(name: str, api_port: int, key: ec.EllipticCurvePrivateKey, admission: Admission | None) -> dict[str, str]:
    """The most attractive beacon there is: nearly free, perfect reputation, fresh for the whole test."""
    beacon = Beacon(api=f"127.0.0.1:{api_port}", timestamp=int(time.time()) + 25, latency_ms=0.1, jitter_ms=0.0,
                    packet_loss=0.0, queue_depth=0.0, price_per_gb=0.000001, reputation=1.0, cpu_total=64.0,
                    cpu_free=64.0, mem_total_mb=65536.0, mem_free_mb=65536.0, capabilities=("container", "exec"))
    return {**encode(beacon, name, key, admission), "fo": "1"}


def test_a_plain_serf_agent_without_the_gossip_key_cannot_join(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.add("a", *EXEC)
    cluster.wait_converged()
    rogue = rogue_serf(tmp_path, a.gossip_addr, "plain-rogue", {}, key=None)
    try:
        time.sleep(5)  # several gossip rounds of the `local` profile
        assert rogue.poll() is not None or "plain-rogue" not in a.nodes()
        assert set(a.nodes()) == {"a"}
    finally:
        stop(rogue)


def test_a_rogue_with_the_leaked_gossip_key_is_listed_but_never_contacted(
    cluster: Cluster, tmp_path: Path, listener: Listener
) -> None:
    flags = (*EXEC, "--respawn-on-node-failure", "--capacity-cpu", "1000")
    a = cluster.add("a", *flags, "--beacon-price", "0.02")
    b = cluster.add("b", *flags, "--beacon-price", "0.03")
    cluster.wait_converged()
    # Its own key, and an "admission" signed by a CA of its own: everything but our CA's signature.
    own_ca = Pki(tmp_path / "rogue-pki")
    _, rogue_ca_key = load_ca_key(own_ca.dir)
    key = keys.generate()
    not_after = int(time.time()) + 86400
    raw = keys.public_bytes(key)
    admission = Admission(not_after, keys.sign(rogue_ca_key, admission_message("rogue", raw, not_after)))
    rogue = rogue_serf(tmp_path, a.gossip_addr, "rogue", forged_tags("rogue", listener.port, key, admission),
                       key=cluster.pki.gossip_key)
    try:
        view = wait_for(lambda: a.nodes().get("rogue"), 20, "the rogue to join the gossip")
        assert view["status"] == "alive" and view["admitted"] is False
        assert view["problem"].startswith("not admitted:") and "CA" in view["problem"], view["problem"]
        # A minute of spawns (whose request-id owners the rogue would win for some ids),
        # probes and failover replication.
        deadline, placed = time.monotonic() + 60, 0
        while time.monotonic() < deadline:
            for via in (a, b):
                r = via.post("/v1/workloads", {"spec": {"command": "sleep 120", "cpu": 0.05, "mem": 1},
                                               "policy": COST, "request_id": str(uuid.uuid4())})
                assert r.status_code == 201 and r.json()["node"] in {"a", "b"}, r.text
                ranked = {x["node"] for x in r.json()["decision"]["ranked"]}
                assert "rogue" not in ranked
                placed += 1
            time.sleep(1.0)
        assert placed >= 40
        assert listener.connections == 0 and listener.datagrams == 0  # no call, no probe
        for node in (a, b):
            status = node.node_request("GET", "/v1/local/failover").json()
            assert "rogue" not in status["buddies"]
            listed = node.nodes()["rogue"]
            assert listed["problem"].startswith("not admitted:") and listed["price_per_gb"] is None  # no claim believed
        metrics = subprocess.run([sys.executable, "-m", "hypercore.cli", "cluster", "metrics"], capture_output=True,
                                 text=True, timeout=60, env={**os.environ, **cluster.client_env(a)})
        assert "Node: rogue (alive)" in metrics.stdout and "not admitted:" in metrics.stdout, metrics.stderr
    finally:
        stop(rogue)


def test_members_with_another_ca_or_another_name_are_not_admitted(cluster: Cluster, tmp_path: Path,
                                                                    listener: Listener) -> None:
    a = cluster.add("a", *EXEC, "--beacon-price", "0.02")
    # A real agent with the gossip key and a certificate from another CA.
    foreign = cluster.add("foreign", *EXEC, "--beacon-price", "0.001", pki=Pki(tmp_path / "other",
                                                                               cluster.pki.gossip_key))
    # A member named "impostor" that publishes the certified key and admission of a real node ("a").
    ident = NodeIdentity.load(cluster.pki.ca_file, *cluster.pki.node("a"), "a")
    impostor = rogue_serf(tmp_path, a.gossip_addr, "impostor",
                          forged_tags("impostor", listener.port, ident.key, Admission(ident.not_after, ident.admission)),
                          key=cluster.pki.gossip_key)
    try:
        def listed() -> dict | None:
            view = a.nodes()
            return view if {"foreign", "impostor"} <= set(view) and view["foreign"]["status"] == "alive" else None

        view = wait_for(listed, 30, "foreign and impostor in a's member list")
        cluster.wait_converged(names=["a"])
        for name in ("foreign", "impostor"):
            assert view[name]["admitted"] is False and view[name]["problem"].startswith("not admitted:"), view[name]
        assert view["a"]["admitted"] is True
        r = a.post("/v1/workloads", {"spec": {"command": "sleep 30", "cpu": 0.05}, "policy": COST})
        assert r.status_code == 201 and r.json()["node"] == "a", r.text
        # The foreign node cannot call a's node-only routes either: its certificate is not our CA's.
        context = ssl.create_default_context(cafile=str(cluster.pki.ca_file))
        context.load_cert_chain(*foreign.pki.node("foreign"))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{a.url}/v1/local/workloads", verify=context, timeout=10)
        assert listener.connections == 0 and listener.datagrams == 0  # no call, no probe
        # And the foreign node sees a as not admitted: neither side will place work on the other.
        assert foreign.nodes()["a"]["admitted"] is False
    finally:
        stop(impostor)


def test_user_routes_need_a_token_and_node_routes_a_node_certificate(trio: Cluster) -> None:
    node = trio["mid"]
    some_id = "00000000-0000-4000-8000-000000000000"
    user_calls = [
        ("POST", "/v1/workloads", {"spec": {"command": "true"}}),
        ("DELETE", f"/v1/workloads/{some_id}", None),
        ("PUT", "/v1/policy", {"name": "x"}),
        ("POST", "/v1/placements", {}),
        ("GET", "/v1/workloads", None),
        ("GET", "/v1/workloads?nodes=cheap,mid", None),
        ("GET", f"/v1/workloads/{some_id}", None),
        ("GET", f"/v1/workloads/{some_id}/logs", None),
        ("POST", f"/v1/workloads/{some_id}/remove", None),
    ]
    for method, path, body in user_calls:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {trio.token}x"}):
            r = httpx.request(method, node.url + path, json=body, headers=headers, verify=trio.pki.verify(), timeout=10)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert "token" in r.json()["error"]["message"]
    node_calls = [
        ("POST", "/v1/local/workloads", {"id": some_id, "spec": {"command": "true"}}),
        ("POST", "/v1/local/spawn", {"spec": {"command": "true"}}),
        ("GET", "/v1/local/workloads", None),
        ("DELETE", f"/v1/local/workloads/{some_id}", None),
        ("GET", f"/v1/local/workloads/{some_id}/logs", None),
        ("GET", f"/v1/local/placements/{some_id}", None),
        ("PUT", "/v1/local/replicas/cheap", {"owner": "cheap", "version": 1, "generated_at": 0}),
        ("GET", "/v1/local/failover", None),
        ("POST", "/v1/local/failover/moved", {"moves": []}),
        ("GET", f"/v1/local/entries/{some_id}", None),
        ("GET", "/v1/local/directory/tester/job-1", None),
        ("POST", "/v1/local/failover/respawn", {"owner": "cheap", "entry": {"id": some_id,
                                                 "spec": {"command": "true"}, "state": "running"}}),
    ]
    for method, path, body in node_calls:
        for token in (trio.token, trio.admin_token, None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = httpx.request(method, node.url + path, json=body, headers=headers, verify=trio.pki.verify(), timeout=10)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert "node-only" in r.json()["error"]["message"]
    # A node's single-workload routes take 1 MiB; the manifests' routes (and lookups of their ids) 16 MiB.
    big = b'{"ids": [' + b'"x",' * 600_000 + b'"x"]}'  # 2.4 MB
    assert node.node_request("POST", "/v1/local/failover/respawn", content=big,
                             headers={"Content-Type": "application/json"}).status_code == 413
    assert node.node_request("POST", "/v1/local/failover/lookup", content=big,
                             headers={"Content-Type": "application/json"}).status_code == 422  # read whole, then refused
    # Public reads stay public.
    for path in ("/healthz", "/v1/nodes", "/v1/policy", "/metrics", "/v1/ping"):
        assert httpx.get(node.url + path, verify=trio.pki.verify(), timeout=10).status_code == 200
    # Plain HTTP is not served at all.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{node.http_port}/healthz", timeout=5)
    # A Host that is not one of the node's names or addresses (DNS rebinding) gets 400.
    evil = httpx.get(node.url + "/v1/nodes", headers={"Host": "evil.example"}, verify=trio.pki.verify(), timeout=10)
    assert evil.status_code == 400
    # A user cannot claim to be a forwarding node, nor another user.
    forged = {"X-Hypercore-Forwarded-By": "cheap", "X-Hypercore-User": "admin", "X-Hypercore-Management": "1"}
    r = node.post("/v1/placements", {}, headers=forged)
    assert r.status_code == 200  # accepted as the token's user: the headers mean nothing on a user route
    assert node.request("PUT", "/v1/policy", json={"name": "x"}, headers=forged).status_code == 403


def test_users_see_and_act_on_their_own_workloads_only(trio: Cluster) -> None:
    alice, bob = trio.pki.token("alice"), trio.pki.token("bob")
    via_a, via_b = trio["cheap"], trio["trusted"]
    spawned = via_a.post("/v1/workloads", {"spec": {"command": "echo secret-of-alice; sleep 60", "cpu": 0.05},
                                           "request_id": "job-1"}, token=alice)
    assert spawned.status_code == 201, spawned.text
    wid, holder = spawned.json()["id"], spawned.json()["node"]
    assert spawned.json()["workload"]["owner"] == "alice"
    try:
        # The same request id from bob is bob's own request, not a way to alice's workload.
        bobs = via_b.post("/v1/workloads", {"spec": {"command": "sleep 60", "cpu": 0.05}, "request_id": "job-1"},
                          token=bob)
        assert bobs.status_code == 201 and bobs.json()["id"] != wid and bobs.json()["existing"] is False, bobs.text
        for via in trio.nodes.values():
            listed = {w["id"] for w in via.get("/v1/workloads", token=bob).json()["workloads"]}
            assert wid not in listed and bobs.json()["id"] in listed
            for method, path in (("GET", f"/v1/workloads/{wid}"), ("GET", f"/v1/workloads/{wid}/logs"),
                                 ("DELETE", f"/v1/workloads/{wid}"), ("POST", f"/v1/workloads/{wid}/remove")):
                r = via.request(method, path, token=bob)
                assert r.status_code == 404, (via.name, method, path, r.status_code, r.text)
                assert "secret-of-alice" not in r.text
        wait_for(lambda: "secret-of-alice" in via_b.get(f"/v1/workloads/{wid}/logs", token=alice).text, 10,
                 "alice to read her own logs through another node")
        admin_list = {w["id"] for w in via_b.get("/v1/workloads", token=trio.admin_token).json()["workloads"]}
        assert {wid, bobs.json()["id"]} <= admin_list
        assert "secret-of-alice" in via_b.get(f"/v1/workloads/{wid}/logs", token=trio.admin_token).text
        stopped = via_b.delete(f"/v1/workloads/{wid}", token=trio.admin_token)
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        assert trio[holder].get(f"/v1/workloads/{wid}", token=alice).json()["state"] == "stopped"
    finally:
        for token in (alice, bob):
            for w in via_a.get("/v1/workloads", token=token).json()["workloads"]:
                via_a.delete(f"/v1/workloads/{w['id']}", token=token)


def test_no_agent_or_serf_process_shows_a_secret_on_its_command_line(trio: Cluster) -> None:
    secrets = [trio.pki.gossip_key, trio.token, trio.admin_token]
    pids = [n.proc.pid for n in trio.nodes.values() if n.proc is not None]
    children = []
    for pid in pids:
        children += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert len(children) >= len(pids)  # the serf agents
    for pid in pids + children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for secret in secrets:
            assert secret not in cmdline, (pid, cmdline)
    # The agent's keys and its serf config are readable by their owner only.
    for node in trio.nodes.values():
        assert (node.data_dir / "serf" / "serf-agent.json").stat().st_mode & 0o077 == 0
    assert (trio.pki.dir / "cheap-key.pem").stat().st_mode & 0o077 == 0
