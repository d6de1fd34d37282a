"""An in-process cluster: real Nodes (protocol, API, failover, SQLite registry), nothing else real.

Like Nomad's scheduler Harness, it runs the logic without its side effects:
- membership is a static list of signed, CA-admitted beacons per node, and a
  test decides who is alive, failed or unreachable (no Serf);
- node-to-node calls go through `InProcessTransport` straight into the
  called node's ASGI app, marked as coming from the calling node's
  certificate (no sockets, no TLS);
- workloads run on `MemoryDriver`, which only keeps book (no processes).
The real-process suites (tests/cluster) cover what this leaves out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx

from hypercore.api.app import create_app
from hypercore.api.auth import PEER_NODE
from hypercore.beacon.tags import Admission, Beacon, encode
from hypercore.identity.admission import admission_check
from hypercore.identity.pki import NodeIdentity, create_ca, create_node_cert, load_ca
from hypercore.identity.tokens import TokenVerifier, create_token
from hypercore.membership.rpc import Coordinate, Member
from hypercore.membership.view import ClusterView, Peer
from hypercore.metrics import AgentMetrics
from hypercore.node import Node
from hypercore.policy import PolicyEngine
from hypercore.runtime.manager import Capacity
from hypercore.transport import PeerResponse, PeerStream, PeerUnreachable, Transport, user_headers
from hypercore.workload import WorkloadSpec


class MemoryDriver:
    """A runtime that runs nothing: start, wait and stop only keep book. Optionally slow to start."""

    name = "exec"

    def __init__(self, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        self.running: dict[str, asyncio.Event] = {}
        self.started: list[str] = []

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> dict[str, Any]:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        log_path.write_bytes(f"{spec.command} started as {workload_id}\n".encode())
        self.running[workload_id] = asyncio.Event()
        self.started.append(workload_id)
        return {"memory": workload_id}

    async def wait(self, handle: dict[str, Any]) -> int | None:
        event = self.running.get(handle["memory"])
        if event is not None:
            await event.wait()
        return 0

    async def stop(self, handle: dict[str, Any], grace: float) -> None:
        event = self.running.pop(handle["memory"], None)
        if event is not None:
            event.set()

    async def is_alive(self, handle: dict[str, Any]) -> bool:
        return handle["memory"] in self.running


class InProcessTransport(Transport):
    """Node-to-node calls into the other node's ASGI app, as node `caller` (as if over mutual TLS)."""

    def __init__(self, cluster: FakeCluster, caller: str, view: ClusterView) -> None:
        super().__init__(view.peer, None)
        self.cluster = cluster
        self.caller = caller
        self.calls: list[tuple[str, str, str]] = []  # (node, method, path)
        self.warmed: list[str] = []  # nodes a connection was opened to ahead of a request (no connections here)

    def warm(self, node: str) -> None:
        self.warmed.append(node)

    async def _reach(self, node: str, method: str, path: str, timeout: float) -> Any:
        """`node`'s app, as seen by a call from this node over mutual TLS; or the failure the test staged."""
        if not self.reachable(node):
            raise PeerUnreachable(f"node {node} is not an alive, admitted member with an API address")
        self.calls.append((node, method, path))
        if node in self.cluster.down:
            raise PeerUnreachable("ClientConnectorError: connection refused")
        if node in self.cluster.frozen:
            await asyncio.sleep(timeout)
            raise PeerUnreachable(f"no answer within {timeout:g} s", timed_out=True)
        app, caller = self.cluster.apps[node], self.caller

        async def as_node(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "extensions": {**(scope.get("extensions") or {}), PEER_NODE: caller}}, receive, send)

        return as_node

    async def request(self, node: str, method: str, path: str, *, json_body: Any = None, timeout: float = 10.0,
                      user: Any = None) -> PeerResponse:
        as_node = await self._reach(node, method, path, timeout)
        transport = httpx.ASGITransport(app=as_node, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=f"https://{node}") as client:
            try:
                r = await asyncio.wait_for(client.request(method, path, json=json_body, headers=user_headers(user)),
                                           timeout)
            except asyncio.TimeoutError:
                raise PeerUnreachable(f"no answer within {timeout:g} s", timed_out=True) from None
        return PeerResponse(r.status_code, r.text, r.headers)

    @contextlib.asynccontextmanager
    async def stream(self, node: str, method: str, path: str, *, timeout: float = 10.0, user: Any = None,
                     chunk_size: int = 64 * 1024) -> AsyncIterator[PeerStream]:
        """Transport.stream into the other node's ASGI app (httpx's ASGI transport gathers the body first)."""
        as_node = await self._reach(node, method, path, timeout)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=as_node), base_url=f"https://{node}") as client:
            async with client.stream(method, path, headers=user_headers(user), timeout=timeout) as r:
                yield PeerStream(r.status_code, r.aiter_bytes(chunk_size))


class FakeCluster:
    def __init__(self, root: Path, *, attempt_timeout: float = 2.0, failover_grace: float = 0.5) -> None:
        self.root = root
        self.ca_dir = root / "pki"
        create_ca(self.ca_dir)
        self.ca = load_ca(self.ca_dir / "ca.pem")
        self.attempt_timeout = attempt_timeout
        self.failover_grace = failover_grace
        self.nodes: dict[str, Node] = {}
        self.drivers: dict[str, MemoryDriver] = {}
        self.apps: dict[str, Any] = {}
        self.statuses: dict[str, str] = {}
        self.beacons: dict[str, dict[str, str]] = {}
        self.coordinates: dict[str, Coordinate] = {}
        self.down: set[str] = set()  # connection refused
        self.frozen: set[str] = set()  # no answer until the caller's timeout
        self._loops: list[asyncio.Task[Any]] = []
        self._published: dict[str, tuple[Beacon, NodeIdentity]] = {}

    def add(self, name: str, *, price: float = 0.01, reputation: float = 1.0, latency_ms: float = 1.0,
            flagged: bool = False, cpu: float = 100.0, start_delay: float = 0.0,
            advertised_cpu: float | None = None, attested: float | None = None,
            position_ms: tuple[float, float] = (0.0, 0.0), region: str | None = None) -> Node:
        """A node; `advertised_cpu`: what its beacon says is free, when that differs from `cpu` (a stale beacon)."""
        cert, key = create_node_cert(self.ca_dir, name, self.ca_dir, reputation=attested)
        identity = NodeIdentity.load(self.ca_dir / "ca.pem", cert, key, name)
        metrics = AgentMetrics()
        view = ClusterView(metrics.beacon_invalid, admit=admission_check(self.ca))
        transport = InProcessTransport(self, name, view)
        node = Node(name=name, data_dir=self.root / name, view=view, transport=transport,
                    engine=PolicyEngine(metrics=metrics.policy), metrics=metrics, capacity=Capacity(cpu=cpu, mem_mb=1e6),
                    tokens=TokenVerifier(self.ca), attempt_timeout=self.attempt_timeout,
                    respawn_on_node_failure=flagged, failover_grace=self.failover_grace, key=identity.key)
        (self.root / name).mkdir(parents=True, exist_ok=True)
        node.ready = True
        driver = MemoryDriver(start_delay)
        node.manager.add_driver(driver)
        beacon = Beacon(api=f"127.0.0.1:{10000 + len(self.nodes)}", timestamp=time.time(), latency_ms=latency_ms,
                        jitter_ms=0.0, packet_loss=0.0, queue_depth=0.0, price_per_gb=price, reputation=reputation,
                        cpu_total=advertised_cpu or cpu, cpu_free=advertised_cpu or cpu, mem_total_mb=1e6,
                        mem_free_mb=1e6, capabilities=("exec",), region=region)
        self._published[name] = (beacon, identity)
        tags = encode(beacon, name, identity.key, Admission(identity.not_after, identity.admission, identity.reputation))
        self.beacons[name] = {**tags, **({"fo": "1"} if flagged else {})}
        self.nodes[name], self.drivers[name], self.statuses[name] = node, driver, "alive"
        # A network position, as Serf's Vivaldi coordinates would give it: RTT = distance + 2 × 0.5 ms.
        self.coordinates[name] = Coordinate(vec=[position_ms[0] / 1000, position_ms[1] / 1000], error=0.1,
                                            adjustment=0.0, height=0.0005)
        self.apps[name] = create_app(node)
        self.refresh()
        return node

    def publish(self, name: str) -> None:
        """`name` publishes a new beacon, as its publisher would on news: its free CPU as its registry says, now."""
        beacon, identity = self._published[name]
        node = self.nodes[name]
        used, _ = node.manager.usage()
        beacon = dataclasses.replace(beacon, timestamp=time.time(), cpu_free=max(0.0, node.capacity.cpu - used))
        self._published[name] = (beacon, identity)
        tags = encode(beacon, name, identity.key, Admission(identity.not_after, identity.admission, identity.reputation))
        self.beacons[name] = {**self.beacons[name], **tags}
        self.refresh()

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def refresh(self) -> None:
        """Every node's view: every node, with the status the test gave it."""
        members = [Member(name=n, addr="127.0.0.1", port=7946, tags=t, status=self.statuses[n])
                   for n, t in self.beacons.items()]
        for node in self.nodes.values():
            node.view.update(members)
            for name, coordinate in self.coordinates.items():
                node.coordinates.set(name, coordinate)
            # One probe of every peer, as the prober's first rounds would give (RTT as the positions say).
            for name in self.nodes:
                if name != node.name and node.probes.stats(name) is None:
                    node.probes.record(name, node.coordinates.rtt_ms(node.name, name))

    def fail(self, name: str) -> None:
        """As Serf would see a killed node: failed everywhere, its API gone."""
        self.statuses[name] = "failed"
        self.down.add(name)
        self.refresh()

    def revive(self, name: str) -> None:
        self.statuses[name] = "alive"
        self.down.discard(name)
        self.refresh()

    def run_failover(self, names: Iterable[str] | None = None) -> None:
        for name in names or self.nodes:
            self._loops.append(asyncio.ensure_future(self.nodes[name].failover.run()))

    def token(self, user: str, management: bool = False) -> str:
        return create_token(self.ca_dir, user, management=management)

    def client(self, node: str, token: str | None) -> httpx.AsyncClient:
        """A user's client of `node`'s API (no client certificate)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.apps[node]), base_url=f"https://{node}",
                                 headers=headers, timeout=30)

    def peer(self, name: str) -> Peer | None:
        return next(iter(self.nodes.values())).view.peer(name)

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for node in self.nodes.values():
            for handle in list(self.drivers[node.name].running):
                self.drivers[node.name].running.pop(handle).set()
            await node.close()


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
