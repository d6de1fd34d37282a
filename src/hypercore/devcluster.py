"""Local multi-node clusters on loopback, for the demo, the benchmarks and the tests.

Each node is a real `hypercore cluster` process with its own real `serf agent`,
data dir and ports. close() ends every agent this module started (by pid) and
every workload process group its nodes recorded, even after a failure.

Clusters run the real, secure path: a cluster CA made in the cluster's
directory, a certificate per node, an encrypted gossip key (handed to the
agent in its environment, never on its command line) and CA-signed user
tokens; every call is HTTPS checked against that CA.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import ssl
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from hypercore.identity.pki import create_ca, create_node_cert
from hypercore.identity.tokens import create_token
from hypercore.runtime.exec import ExecDriver, read_proc_stat
from hypercore.runtime.vm import kill_vms

HYPERCORE = [sys.executable, "-m", "hypercore.cli"]
USER = "tester"  # the user of Cluster.token


_PORTS_PER_PROCESS = 1500
_PORT_BASE = 15000  # below Linux's ephemeral range (32768+), so the kernel never hands these out on its own
_next_port: list[int] = []


def _port_block() -> int:
    """This process's first port: its own block, so parallel test workers never pick the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    # Test workers gw0-gw3 take blocks 0-3; any other process (demo, benchmarks) one of 4-10 by its pid.
    slot = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 4 + os.getpid() % 7
    return _PORT_BASE + (slot % 11) * _PORTS_PER_PROCESS


def free_port() -> int:
    """A loopback port free for both TCP and UDP (serf gossips over both), from this process's block.

    Binding port 0 and releasing it is racy when several processes do it at
    once (another one may get the same port before ours is used), so each
    process walks its own block instead and checks that a port is free.
    """
    if not _next_port:
        _next_port.append(_port_block())
    start = _port_block()
    for _ in range(_PORTS_PER_PROCESS):
        port = _next_port[0]
        _next_port[0] = start + (port + 1 - start) % _PORTS_PER_PROCESS
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("could not find a free TCP+UDP port on 127.0.0.1")


def live_workload_processes(command: str = "sleep") -> Counter[str]:
    """Live processes named `command`, counted per workload id found in their environment.

    Read from /proc — the runtime's truth — so that tests count copies without
    trusting any registry.
    """
    counts: Counter[str] = Counter()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != command:
                continue
            stat = read_proc_stat(int(entry))
            if stat is None or not stat.alive:
                continue
            for item in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                if item.startswith(b"HYPERCORE_WORKLOAD_ID="):
                    counts[item.split(b"=", 1)[1].decode()] += 1
        except OSError:
            continue
    return counts


def rss_kb(pid: int) -> int:
    """Resident memory of process `pid` in KiB (VmRSS); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Pki:
    """A cluster's credentials in `<dir>`: CA, node certificates, gossip key, user tokens."""

    def __init__(self, dir: Path, gossip_key: str | None = None) -> None:
        self.dir = dir
        create_ca(dir)
        self.ca_file = dir / "ca.pem"
        self.gossip_key = gossip_key or base64.b64encode(secrets.token_bytes(32)).decode()
        self._ssl: ssl.SSLContext | None = None
        self._node_ssl: dict[str, ssl.SSLContext] = {}

    def node(self, name: str, reputation: float | None = None, ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
        """(certificate, key) of node `name`, made on first use; `reputation`: the prior the operator attests;
        `ips`: the addresses its API is reached at."""
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        if not cert.exists():
            create_node_cert(self.dir, name, self.dir, ips=list(ips), reputation=reputation)
        return cert, key

    def token(self, user: str = USER, management: bool = False) -> str:
        return create_token(self.dir, user, management=management)

    def verify(self) -> ssl.SSLContext:
        """What a user's HTTPS client checks agents against: this cluster's CA."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def node_verify(self, name: str = "devcluster-operator") -> ssl.SSLContext:
        """A client context that also presents a CA-issued node certificate: it opens node-only routes."""
        if name not in self._node_ssl:
            cert, key = self.node(name)
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.load_cert_chain(cert, key)
            self._node_ssl[name] = context
        return self._node_ssl[name]


class Node:
    # True: the agent gets a session of its own, so a terminal's Ctrl-C reaches only the command that
    # started it, which then stops its nodes in order (the geo test-bed: agents first, the WAN last).
    new_session = False

    def __init__(self, name: str, root: Path, extra: list[str], pki: Pki, token: str | None,
                 insecure: bool = False) -> None:
        self.name = name
        self.data_dir = root / name
        self.gossip_port = free_port()
        self.rpc_port = free_port()
        self.http_port = free_port()
        self.pki = pki
        self.token = token
        self.insecure = insecure
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / f"{name}.log"

    @property
    def gossip_addr(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    @property
    def url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://127.0.0.1:{self.http_port}"

    def args(self, join: list[str]) -> list[str]:
        args = [
            "cluster", *join,
            "--node-name", self.name,
            "--data-dir", str(self.data_dir),
            "--cluster-bind-addr", self.gossip_addr,
            "--serf-rpc-addr", f"127.0.0.1:{self.rpc_port}",
            "--http-bind-addr", f"127.0.0.1:{self.http_port}",
            "--serf-profile", "local",
            "--ca-file", str(self.pki.ca_file),
            *self.extra,
        ]
        if self.insecure:
            return [*args, "--insecure"]
        # A node's own --beacon-reputation counts for nothing; here the operator attests the same figure
        # in its certificate, so that local clusters start with the priors their nodes were given.
        claimed = self.extra[self.extra.index("--beacon-reputation") + 1] if "--beacon-reputation" in self.extra else None
        cert, key = self.pki.node(self.name, float(claimed) if claimed is not None else None)
        return [*args, "--cert-file", str(cert), "--key-file", str(key)]

    def argv(self, join: list[str]) -> list[str]:
        """The agent's command line (the geo test-bed runs it inside the node's network namespace)."""
        return [*HYPERCORE, *self.args(join)]

    def start(self, join: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key in [k for k in env if k.startswith("HYPERCORE_")]:
            env.pop(key)
        if not self.insecure:
            env["HYPERCORE_ENCRYPT"] = self.pki.gossip_key  # a secret: in the environment, not on the command line
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(join), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=self.new_session)
        log.close()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def ok() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return httpx.get(f"{self.url}/healthz", timeout=1, verify=self.pki.verify()).status_code == 200

        wait_for(ok, timeout, f"{self.name} /healthz")

    def rss_kb(self) -> int:
        """The agent process's resident memory, KiB (the node must be running)."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        return rss_kb(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> httpx.Response:
        """An HTTPS call as a user: this node's default token, or `token`."""
        headers = {"Authorization": f"Bearer {token}"} if token else self.headers()
        kw.setdefault("timeout", 60)
        return httpx.request(method, f"{self.url}{path}", headers={**headers, **kw.pop("headers", {})},
                             verify=self.pki.verify(), **kw)

    def node_request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A call to a node-only route, presenting a node certificate of this cluster (no user token)."""
        kw.setdefault("timeout", 60)
        return httpx.request(method, f"{self.url}{path}", verify=self.pki.node_verify(), **kw)

    def replicated(self, n_workloads: int) -> bool:
        """This node's current manifest lists n workloads and both of its failover buddies confirmed it
        (failover respawns only what the buddies hold)."""
        status = self.node_request("GET", "/v1/local/failover").json()
        buddies = status["buddies"]
        return (status["workloads"] == n_workloads and len(buddies) == 2
                and all(b["acked"] == status["version"] for b in buddies.values()))

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.request("POST", path, json=body, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.get("/v1/nodes").json()["nodes"]}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def restart(self, join: list[str] | None = None) -> None:
        """Start the node again with the same name, ports and data dir."""
        assert self.proc is None or self.proc.poll() is not None, "stop or kill the node first"
        self.start(join or [])
        self.wait_healthy()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def workload_handles(self) -> list[dict[str, Any]]:
        db = self.data_dir / "registry.sqlite3"
        if not db.exists():
            return []
        try:
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT handle FROM workloads WHERE handle IS NOT NULL").fetchall()
        except sqlite3.OperationalError:  # an agent that died before making its table: it started nothing
            return []
        out = []
        for (handle,) in rows:
            try:
                h = json.loads(handle)
            except (TypeError, ValueError):
                continue
            if isinstance(h, dict) and (isinstance(h.get("pgid"), int) or "container_id" in h):
                out.append(h)
        return out


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = Pki(root / "pki")
        self.token_user = USER
        self.token = self.pki.token(USER)  # an ordinary user's token: what every Node helper sends
        self.admin_token = self.pki.token("admin", management=True)
        self.nodes: dict[str, Node] = {}

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    def client_env(self, node: Node | None = None, token: str | None = None) -> dict[str, str]:
        """Environment for the `hypercore cluster …` client commands against `node` (the first by default)."""
        node = node or next(iter(self.nodes.values()))
        return {"HYPERCORE_ADDR": node.url, "HYPERCORE_TOKEN": token or self.token, "HYPERCORE_CACERT": str(self.ca_file)}

    def add(self, name: str, *extra: str, join: bool = True, wait: bool = True, pki: Pki | None = None,
            insecure: bool = False) -> Node:
        """Start node `name`; `pki`: credentials of another cluster (a node this one must not admit)."""
        node = Node(name, self.root, list(extra), pki or self.pki, self.token, insecure=insecure)
        seeds = [n.gossip_addr for n in self.nodes.values()][:1] if join else []
        self.nodes[name] = node
        node.start(seeds)
        if wait:
            node.wait_healthy()
        return node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def converged(self, observers: list[str], names: list[str]) -> bool:
        """Every observer sees every listed node alive with verified beacon data and measured links."""
        for name in observers:
            view = self.nodes[name].nodes()
            for other in names:
                n = view.get(other)
                # Measured, not only estimated: the observer has probed it (loss comes from its probes).
                if n is None or n["status"] != "alive" or n["beacon_id"] is None or n["latency_ms"] is None \
                        or n["packet_loss"] is None:
                    return False
        return True

    def wait_converged(self, timeout: float = 30.0, names: list[str] | None = None) -> None:
        """Every listed node sees every listed node alive with verified beacon data."""
        names = names or list(self.nodes)
        wait_for(lambda: self.converged(names, names), timeout, f"cluster {names} to converge with beacons")

    def close(self) -> None:
        # SIGTERM to all first, then wait: the nodes leave the cluster in parallel, not one after another.
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            node.stop(timeout=10)
        # Workloads outlive their agent by design; end the ones our nodes started.
        driver = ExecDriver()
        killed = []
        for node in self.nodes.values():
            for handle in node.workload_handles():
                if "container_id" in handle:
                    subprocess.run([handle.get("engine") or "podman", "rm", "-f", "--time", "0", handle["container_id"]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
                elif driver.is_running(handle):
                    try:
                        os.killpg(handle["pgid"], signal.SIGKILL)
                        killed.append(handle)
                    except (ProcessLookupError, PermissionError):
                        pass
            kill_vms(node.data_dir / "workloads")  # found by their directories: also those with no handle stored
        # Their supervisors record the end and exit: wait, so that nobody writes in a directory being removed.
        deadline = time.monotonic() + 10.0
        while any(driver.is_running(h) for h in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
