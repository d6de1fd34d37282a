"""A geo test-bed on one machine: every node in its own network namespace, all links through the WAN emulator.

`GeoTestbed(topology, root).start()` claims a free 10.N.0.0/16 (N in
200..249, by creating the first namespace, `hcN-<node>`: a name is taken
atomically), makes one namespace per node, starts the WAN emulator
(hypercore.testbed.wan) with a TUN device in each namespace and one in the
namespace it runs in (address 10.N.255.254), then a real agent per node
inside its namespace: gossip on 10.N.x.y:7946, its API on 10.N.x.y:8001,
Serf RPC on the namespace's own loopback, `--region` from the topology. It
returns once every node sees every node admitted, alive and measured by its
own probes (latency and loss known). `close()` ends the agents (SIGTERM,
then what is left in the namespaces), their workloads and the emulator, and
deletes the namespaces, even after a failed start.

The rest is the loopback dev cluster's (hypercore.devcluster): the CA, the
node certificates (which also name the node's test-bed address), the gossip
key and the user tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypercore.devcluster import Cluster, Node, Pki, wait_for
from hypercore.testbed import netns
from hypercore.testbed.topology import NodeSpec, Topology
from hypercore.testbed.wan import Endpoint, WanConfig

GOSSIP_PORT, RPC_PORT, API_PORT = 7946, 7373, 8001
OCTETS = range(200, 250)
SUBNET_PREFIX = 16
TUN = "wan0"


def check_can_run() -> None:
    """Refuse early, and say why, where the test-bed cannot run."""
    if os.geteuid() != 0:
        raise netns.NetnsError("the geo test-bed needs root (it makes network namespaces and TUN devices); "
                               "run it with sudo")
    for program in ("ip", "nsenter"):
        if shutil.which(program) is None:
            raise netns.NetnsError(f"the geo test-bed needs `{program}` (Debian: iproute2, util-linux)")
    if not Path("/dev/net/tun").exists():
        raise netns.NetnsError("the geo test-bed needs /dev/net/tun (modprobe tun)")


class GeoNode(Node):
    """A devcluster node whose agent runs in network namespace `namespace` at `address`."""

    new_session = True

    def __init__(self, name: str, region: str, spec: NodeSpec, root: Path, pki: Pki, token: str, namespace: str,
                 address: str) -> None:
        # Not Node.__init__: it picks loopback ports, and here every node has the same ports in its own namespace.
        self.name, self.region, self.spec = name, region, spec
        self.data_dir = root / name
        self.pki, self.token, self.insecure = pki, token, False
        self.namespace, self.address = namespace, address
        self.gossip_port, self.rpc_port, self.http_port = GOSSIP_PORT, RPC_PORT, API_PORT
        self.extra: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / f"{name}.log"

    @property
    def gossip_addr(self) -> str:
        return f"{self.address}:{GOSSIP_PORT}"

    @property
    def url(self) -> str:
        return f"https://{self.address}:{API_PORT}"

    def args(self, join: list[str]) -> list[str]:
        cert, key = self.pki.node(self.name, self.spec.reputation, ips=(self.address, "127.0.0.1"))
        spec = self.spec
        return [
            "cluster", *join, "--node-name", self.name, "--data-dir", str(self.data_dir),
            "--cluster-bind-addr", self.gossip_addr, "--serf-rpc-addr", f"127.0.0.1:{RPC_PORT}",
            "--http-bind-addr", f"{self.address}:{API_PORT}", "--serf-profile", "lan",
            "--ca-file", str(self.pki.ca_file), "--cert-file", str(cert), "--key-file", str(key),
            "--region", self.region, "--beacon-price", repr(spec.price_per_gb),
            "--capacity-cpu", repr(spec.cpu), "--capacity-mem", repr(spec.mem_mb), "--disable-containers",
            *(["--enable-exec"] if spec.exec else []),
        ]

    def argv(self, join: list[str]) -> list[str]:
        return netns.command(self.namespace, super().argv(join))


class GeoTestbed(Cluster):
    def __init__(self, topology: Topology, root: Path) -> None:
        super().__init__(root)
        self.topology = topology
        self.octet: int | None = None
        self.namespaces: list[str] = []
        self.wan: subprocess.Popen[str] | None = None
        self.host_address = ""
        self.timings: dict[str, float] = {}  # seconds from the agents' start: all measured, coordinates settled

    # -- start ---------------------------------------------------------------------

    def _claim_subnet(self) -> int:
        first = self.topology.nodes()[0][1].name
        for octet in OCTETS:
            if netns.ip("-4", "route", "show", "to", "match", f"10.{octet}.0.1").stdout.strip() \
                    .startswith(f"10.{octet}."):
                continue  # someone on this machine routes that /16 already
            if netns.add(f"hc{octet}-{first}"):
                self.namespaces.append(f"hc{octet}-{first}")
                return octet
        raise netns.NetnsError(f"no free 10.N.0.0/16 for N in {OCTETS.start}..{OCTETS.stop - 1} "
                               "(namespaces hcN-* of other test-beds hold them)")

    def _start_wan(self, octet: int) -> None:
        endpoints = [Endpoint(n.name, n.namespace, TUN, n.address, n.region)
                     for n in self.nodes.values() if isinstance(n, GeoNode)]
        self.host_address = f"10.{octet}.255.254"
        endpoints.append(Endpoint("host", None, f"hcgeo{octet}", self.host_address, None))
        links = {"|".join(sorted(link.between)): (link.rtt_ms / 2000.0, link.loss_percent / 100.0)
                 for link in self.topology.links}
        config = self.root / "wan.json"
        config.write_text(json.dumps(WanConfig(SUBNET_PREFIX, endpoints, links).dump(), indent=1))
        log = open(self.root / "wan.log", "ab")
        self.wan = subprocess.Popen([sys.executable, "-m", "hypercore.testbed.wan", str(config)],
                                    stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        log.close()
        assert self.wan.stdout is not None
        line = self.wan.stdout.readline().strip()  # "ready", or EOF when it failed
        if line != "ready":
            self.wan.wait(10)
            tail = (self.root / "wan.log").read_text(errors="replace")[-2000:]
            raise netns.NetnsError(f"the WAN emulator did not start (exit {self.wan.returncode}):\n{tail}")

    def start(self, timeout: float = 90.0) -> None:
        """Namespaces, emulator, agents; returns once every node has measured every other one."""
        check_can_run()
        self.octet = octet = self._claim_subnet()
        for i, (region, spec) in enumerate(self.topology.nodes()):
            namespace = f"hc{octet}-{spec.name}"
            if namespace not in self.namespaces:
                if not netns.add(namespace):
                    raise netns.NetnsError(f"network namespace {namespace} exists already (another test-bed's?)")
                self.namespaces.append(namespace)
            address = f"10.{octet}.{i // 250}.{i % 250 + 1}"
            self.nodes[spec.name] = GeoNode(spec.name, region, spec, self.root, self.pki, self.token, namespace,
                                            address)
        self._start_wan(octet)
        started = time.monotonic()
        deadline = started + timeout
        nodes = list(self.nodes.values())
        for i, node in enumerate(nodes):
            node.start([nodes[0].gossip_addr] if i else [])  # all at once: they join through the first
        for node in nodes:
            node.wait_healthy(timeout=max(1.0, deadline - time.monotonic()))
        self.wait_converged(timeout=max(1.0, deadline - time.monotonic()))
        self.timings["measured_s"] = round(time.monotonic() - started, 1)
        problems: list[str] = []

        def agree() -> bool:
            problems[:] = [problem] if (problem := self.coordinate_problem()) else []
            return not problems

        try:
            wait_for(agree, max(1.0, deadline - time.monotonic()), "network coordinates to match the topology",
                     interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {problems[0] if problems else 'no answer'}") from None
        self.timings["coordinates_s"] = round(time.monotonic() - started, 1)

    def rtt_ms(self, a: str, b: str) -> float:
        """The round trip the topology sets between nodes `a` and `b`."""
        na, nb = self.nodes[a], self.nodes[b]
        assert isinstance(na, GeoNode) and isinstance(nb, GeoNode)
        return self.topology.link(na.region, nb.region).rtt_ms

    def coordinate_problem(self) -> str | None:
        """None once every node's estimates from every origin (`/v1/nodes?near=`: Serf's coordinates) are
        within 25 % of the topology's RTT for other regions, and under half the nearest other region for its
        own; else the first estimate that is not.

        A spawn is ranked by its request id's owner, which may be any node, with latencies from the origin
        estimated from coordinates: until they settle (20-40 s here) it may rank a far node first.
        """
        for asked in self.nodes.values():
            for origin in self.nodes:
                local = self.rtt_ms(origin, origin)
                farther = [self.rtt_ms(origin, n) for n in self.nodes if self.rtt_ms(origin, n) > local]
                for n in asked.get("/v1/nodes", params={"near": origin}, timeout=5).json()["nodes"]:
                    if n["name"] == origin:
                        continue
                    true, got = self.rtt_ms(origin, n["name"]), n.get("latency_ms")
                    if got is None:
                        return f"{asked.name} has no latency for {n['name']} near {origin}"
                    if true > local and abs(got - true) > 0.25 * true:
                        return f"{asked.name}: {origin} to {n['name']} {got:.0f} ms, topology {true:g} ms"
                    if true <= local and farther and got >= min(farther) / 2:
                        return f"{asked.name}: {origin} to {n['name']} {got:.0f} ms, same region"
        return None

    # -- what users get ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What `hypercore dev up --state-file` writes: each node's region and API address, a user token, the CA."""
        return {
            "nodes": [{"name": n.name, "region": n.region, "api": n.url, "netns": n.namespace}
                      for n in self.nodes.values() if isinstance(n, GeoNode)],
            "token": self.token,
            "ca_file": str(self.ca_file),
            "management_token": self.admin_token,
            "wan_pid": self.wan.pid if self.wan is not None else None,
            "ready_s": self.timings,
        }

    # -- stop ----------------------------------------------------------------------------

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.wan is not None and self.wan.poll() is None:
                self.wan.terminate()
                try:
                    self.wan.wait(10)
                except subprocess.TimeoutExpired:
                    self.wan.kill()
                    self.wan.wait(5)
            remove_namespaces(self.namespaces)
            self.namespaces = []


def remove_namespaces(names: list[str]) -> None:
    """End what still runs in these namespaces (they are ours: everything in them we started), then delete them."""
    for name in names:
        for pid in netns.pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        netns.delete(name)
