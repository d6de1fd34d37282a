"""The node agent: supervises Serf, publishes the beacon, serves the API, runs workloads.

One asyncio process per machine. Start-up order matters: the workload store and
runtime first (so adopted workloads count in the first beacon), then Serf, then
the API, then the beacon and the join — a peer that sees our tags can reach us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

from hypercore.api.app import create_app
from hypercore.api.server import make_server
from hypercore.beacon.echo import member_pinger, open_echo
from hypercore.beacon.keys import load_or_create_node_key
from hypercore.beacon.probe import ProbeWindow
from hypercore.beacon.publisher import BeaconPublisher, Prober
from hypercore.beacon.tags import Admission
from hypercore.config import AgentConfig, ConfigError
from hypercore.failover import FLAG_TAG
from hypercore.heap import freeze_startup_heap
from hypercore.identity.admission import admission_check
from hypercore.identity.pki import ClusterCA, NodeIdentity, load_ca
from hypercore.identity.tls import client_context, server_context
from hypercore.identity.tokens import TokenVerifier
from hypercore.loops import Backoff, TaskSet, periodic
from hypercore.membership import SerfAgent, SerfError, SerfTimeoutError
from hypercore.membership.hosts import MemberHosts
from hypercore.membership.view import ClusterView
from hypercore.metrics import AgentMetrics
from hypercore.policy import PERMISSIVE_DEFAULT, PolicyEngine, PolicyError, load_policy_file
from hypercore.runtime.exec import ExecDriver
from hypercore.runtime.gc import GarbageCollector
from hypercore.node import Node
from hypercore.reputation.service import EXCHANGE_S
from hypercore.runtime.manager import Capacity
from hypercore.runtime.oci import OCIDriver
from hypercore.runtime.vm import VMDriver
from hypercore.runtime.vm_assets import AssetError
from hypercore.netaddr import is_loopback, split_host_port
from hypercore.transport import Transport

log = logging.getLogger("hypercore.agent")

MEMBER_EVENTS = "member-join,member-leave,member-failed,member-update,member-reap"
COORDINATES_S = 10.0  # refresh period (0.9 RPCs/s at any size) and a read's deadline: nothing waits for one
COORDINATE_READS = 8  # members read per refresh (one RPC each): every member at least every N/8 × 10 s
FIRST_PROBES = 8  # members probed at once when they join (see _spawn_first_probes)
FULL_REFRESH_S = 60.0  # a full member read (O(N) bytes), in case an event was missed (events keep the view current)


def _node_name(data_dir: Path, given: str | None) -> str:
    """The given name, or one made from the hostname once and kept in the data dir."""
    if given:
        return given
    path = data_dir / "node-name"
    if path.exists():
        return path.read_text().strip()
    name = f"{socket.gethostname()}-{secrets.token_hex(3)}"
    path.write_text(name + "\n")
    return name


def _identity(config: AgentConfig, gossip_host: str, http_host: str) -> tuple[NodeIdentity | None, ClusterCA | None]:
    """This node's certified identity and the cluster CA, or (None, CA or None) with --insecure."""
    if config.insecure:
        if not (is_loopback(gossip_host) and is_loopback(http_host)):
            raise ConfigError(
                f"--insecure is allowed only on loopback addresses; --cluster-bind-addr {config.cluster_bind_addr} "
                f"and --http-bind-addr {config.http_bind_addr} must both be 127.0.0.1 (or another loopback address)")
        log.warning("INSECURE MODE: no TLS, no admission of members, no gossip encryption; node-only routes answer "
                    "anyone who can reach this loopback port. Never use it on a machine shared with others.")
        return None, load_ca(config.ca_file) if config.ca_file else None
    missing = [flag for flag, value in (("--ca-file", config.ca_file), ("--cert-file", config.cert_file),
                                        ("--key-file", config.key_file), ("--encrypt", config.encrypt)) if not value]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}: a node needs the cluster CA, its own certificate and key, and the gossip key. "
            "Make them with `hypercore tls ca create --dir DIR`, `hypercore tls cert create --ca-dir DIR --node NAME "
            "--out DIR` and `hypercore keygen` (or set HYPERCORE_CA_FILE, HYPERCORE_CERT_FILE, HYPERCORE_KEY_FILE, "
            "HYPERCORE_ENCRYPT). --insecure runs without them, on loopback addresses only.")
    assert config.ca_file and config.cert_file and config.key_file
    name = config.node_name or _certified_name(config.cert_file)
    identity = NodeIdentity.load(config.ca_file, config.cert_file, config.key_file, name)
    return identity, identity.ca


def _certified_name(cert_file: Path) -> str:
    """The node name a certificate certifies (its first DNS name), used when --node-name is not given."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise ConfigError(f"--cert-file {cert_file}: cannot read the node name it certifies ({exc})") from None
    if not names:
        raise ConfigError(f"--cert-file {cert_file} names no node (no DNS name); pass --node-name")
    return str(names[0])


class NodeAgent:
    """A Node (hypercore.node) plus what makes it a process on a network: Serf, the HTTPS API, the beacon."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        # Checked by the config model already; here they are only taken apart.
        self.http_host, self.http_port = split_host_port(config.http_bind_addr, "--http-bind-addr",
                                                         allow_port_zero=True, default_host="0.0.0.0")
        gossip_host, _ = split_host_port(config.cluster_bind_addr, "--cluster-bind-addr", default_host="0.0.0.0")
        self.identity, ca = _identity(config, gossip_host, self.http_host)
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = self.identity.name if self.identity else _node_name(data_dir, config.node_name)
        metrics = AgentMetrics()
        policy = PERMISSIVE_DEFAULT
        if config.cluster_policy is not None:
            policy = load_policy_file(config.cluster_policy)
        # Without a CA (--insecure) every member with a verified beacon counts as admitted.
        view = ClusterView(metrics.beacon_invalid, admit=admission_check(ca) if self.identity else None)
        self.key = self.identity.key if self.identity else load_or_create_node_key(data_dir)
        capacity = Capacity.of_machine(config.capacity_cpu, config.capacity_mem)
        transport = Transport(view.peer, client_context(self.identity, ca.path) if self.identity and ca else None,
                              on_request=lambda route: metrics.node_requests.labels(route=route).inc())
        self.node = Node(
            name=name, data_dir=data_dir, view=view, transport=transport, engine=PolicyEngine(policy, metrics.policy),
            metrics=metrics, capacity=capacity, tokens=TokenVerifier(ca) if ca is not None else None,
            insecure=config.insecure, attempt_timeout=config.placement_timeout,
            respawn_on_node_failure=config.respawn_on_node_failure,
            max_workloads=config.max_workloads, max_log_mb=config.max_log_mb,
            spawn_rate=config.spawn_rate, spawn_burst=config.spawn_burst, key=self.key)
        self.name = name
        self.serf: SerfAgent | None = None
        self.publisher: BeaconPublisher | None = None
        self.prober: Prober | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._oneshots = TaskSet()  # reads and probes started by member events (done ones leave the set)

    # -- beacon inputs -------------------------------------------------------------

    def _sample(self) -> dict[str, Any]:
        assert self.prober is not None
        link = self.prober.window.stats()
        manager, capacity = self.node.manager, self.node.capacity
        cpu_used, mem_used = manager.usage()
        return {
            "latency_ms": link.latency_ms,
            "jitter_ms": link.jitter_ms,
            "packet_loss": link.packet_loss,
            "queue_depth": float(manager.queue_depth()),
            "capabilities": tuple(manager.capabilities),
            "cpu_total": capacity.cpu,
            "cpu_free": max(0.0, capacity.cpu - cpu_used),
            "mem_total_mb": capacity.mem_mb,
            "mem_free_mb": max(0.0, capacity.mem_mb - mem_used),
        }

    def _probe_targets(self) -> list[str]:
        view = self.node.view
        # Alone, the node measures its own API so that its metrics are never unknown.
        return view.peers(exclude=self.name) or [n for n in (self.name,) if view.peer(n)]

    # -- membership ------------------------------------------------------------------

    async def _watch_members(self) -> None:
        """Keep the view current from Serf's member events, with a full read every FULL_REFRESH_S."""
        assert self.serf is not None
        rpc, view = self.serf.rpc, self.node.view
        backoff = Backoff(first=0.5, cap=5.0)
        while True:
            try:
                events = await rpc.stream(MEMBER_EVENTS)
                try:
                    view.update(await rpc.members())  # after subscribing, so no change falls in between
                    backoff.reset()
                    next_full = time.monotonic() + FULL_REFRESH_S
                    while True:
                        try:
                            event = await events.next(timeout=max(0.01, next_full - time.monotonic()))
                        except SerfTimeoutError:
                            view.update(await rpc.members())
                            next_full = time.monotonic() + FULL_REFRESH_S
                            continue
                        if event["Event"] == "member-reap":
                            view.remove(m.name for m in event["Members"])
                        else:
                            view.upsert(event["Members"])
                            names = [m.name for m in event["Members"]]
                            if event["Event"] == "member-join":  # its network coordinate, without waiting
                                self._oneshots.spawn(self._read_coordinates(names, quiet=True))
                            if event["Event"] in ("member-join", "member-update"):  # a first figure, at once
                                self._spawn_first_probes(names)
                finally:
                    with contextlib.suppress(SerfError, OSError):
                        await events.stop(timeout=2.0)
            except SerfError as exc:
                if not self.serf.running:
                    log.error("serf agent exited; shutting down", extra={"log": self.serf.log_tail(5)})
                    self._stop.set()
                    return
                delay = backoff.next()
                log.warning("cannot follow members in serf; retrying", extra={"error": str(exc), "retry_in": delay})
                await asyncio.sleep(delay)

    def _spawn_first_probes(self, names: list[str]) -> None:
        """Probe members this node has never measured now, not at the next round (up to FIRST_PROBES of them:
        a node joining a large cluster hears of every member at once; the rounds measure the rest)."""
        assert self.prober is not None
        new = [n for n in names if n != self.name and not self.node.probes.has(n)][:FIRST_PROBES]
        if new:
            self._oneshots.spawn(self.prober.probe_now(new))

    async def _refresh_coordinates(self) -> None:
        """Serf's network coordinates, for latencies measured from any origin: this node's own and the
        COORDINATE_READS stalest others' each round (one RPC each, so a round costs the same at any size)."""
        names = {n.name for n in self.node.view.nodes()} | {self.name}
        stalest = self.node.coordinates.stalest(names - {self.name}, COORDINATE_READS)
        if await self._read_coordinates([self.name, *stalest]):
            self.node.coordinates.forget_except(names)
            self.node.probes.forget_except(names)

    async def _read_coordinates(self, names: list[str], *, quiet: bool = False) -> bool:
        """Read `names`' coordinates into the book, one RPC each; False when Serf did not answer one. (Past 5 s
        answers came while 100 agents started on 2 cores, saturated for a minute: bench/scale.py counted 1-6.)"""
        assert self.serf is not None
        for name in names:
            try:
                self.node.coordinates.set(name, await self.serf.rpc.get_coordinate(name, timeout=COORDINATES_S))
            except SerfError as exc:  # Serf busy (a machine under load): the next round reads it; no traceback
                if not quiet:
                    log.warning("cannot read a network coordinate from serf",
                                extra={"node": name, "error": f"{type(exc).__name__}: {exc}"})
                return False
        return True

    async def _join(self) -> None:
        assert self.serf is not None
        backoff = Backoff(first=1.0, cap=15.0)
        while True:
            try:
                n = await self.serf.join(list(self.config.join))
                if n > 0:
                    log.info("joined cluster", extra={"contacted": n, "addrs": ",".join(self.config.join)})
                    break
            except SerfError as exc:
                log.warning("join failed; retrying", extra={"addrs": ",".join(self.config.join), "error": str(exc)})
            await asyncio.sleep(backoff.next())
        with contextlib.suppress(SerfError):  # the members it met, now: Serf's coalesced events come ~1 s later
            self.node.view.update(await self.serf.rpc.members())

    def _reload_policy(self) -> None:
        path = self.config.cluster_policy
        if path is None:
            log.info("SIGHUP: no --cluster-policy to reload")
            return
        engine = self.node.engine
        try:
            policy = load_policy_file(path)
        except PolicyError as exc:
            log.error("policy reload failed; keeping the current policy",
                      extra={"file": str(path), "error": str(exc), "current": engine.policy.name})
            return
        engine.swap(policy)
        self.node.log_policy(policy, "reloaded on SIGHUP")

    async def _start_runtime(self) -> None:
        """Enable the drivers this node can run, then re-adopt what survived a restart."""
        manager = self.node.manager
        if self.config.enable_exec:
            driver = ExecDriver(max_log_bytes=self.node.max_log_bytes,  # the supervisor caps the log
                                uid_base=self.config.exec_uid_base, zygote=not self.config.disable_exec_zygote)
            if driver.init is None and os.geteuid() == 0:
                log.warning("tini not found: exec workloads get no PID namespace of their own and can see the "
                            "node's processes; install it with `apt-get install tini`")
            manager.add_driver(driver)
            driver.warm_up()
        if not self.config.disable_containers:
            oci = await OCIDriver.detect(self.config.container_engine, node_name=self.name)
            if oci is not None:
                oci.log_max_bytes = self.node.max_log_bytes  # read by runtime.oci_argv: conmon caps the file
                manager.add_driver(oci)
            elif self.config.container_engine:
                raise ConfigError(f"--container-engine {self.config.container_engine!r} does not answer")
            else:
                log.info("no container engine answers (podman or docker); not offering 'container'")
        if self.config.enable_vm:
            try:  # asked for explicitly: a node that cannot boot VMs says why and does not start
                vm = await VMDriver.detect(self.config.vm_cache_dir or self.config.data_dir / "vm",
                                           max_log_bytes=self.node.max_log_bytes)
            except AssetError as exc:
                raise ConfigError(f"--enable-vm: {exc}") from None
            log.info("offering VMs", extra={"accel": vm.accel, "kernel": vm.assets.version})
            manager.add_driver(vm)
        adopted = await manager.adopt()
        if adopted:
            log.info("re-adopted workloads after restart", extra={
                "running": sum(1 for r in adopted if r.state.value == "running"),
                "lost": sum(1 for r in adopted if r.state.value != "running")})

    def _allowed_hosts(self) -> list[str]:
        """Host header values the API answers: this node's names and addresses (others: DNS rebinding)."""
        hosts = {self.name, "localhost", "127.0.0.1"}
        if self.http_host not in ("0.0.0.0", "::", ""):
            hosts.add(self.http_host)
        if self.identity is not None:
            hosts.update(self.identity.dns_names, self.identity.ips)
        return sorted(hosts)

    def _api_advertise(self) -> str:
        wildcard = self.http_host in ("0.0.0.0", "::", "")
        return f":{self.http_port}" if wildcard else f"{self.http_host}:{self.http_port}"

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_policy)
        node = self.node
        node.log_policy(node.engine.policy, "at start")
        members = MemberHosts(node.member_hosts, own=self.http_host)
        node.view.membership_changed.subscribe(members.stale)
        echo = await open_echo(self.name, self.http_host, self.http_port, member_host=members,  # probes (beacon.echo)
                               answered=node.metrics.probe_answers.inc, refused=node.metrics.probe_refused.inc)
        await self._start_runtime()
        # The failover flag is a static tag: others read it from the member list (hypercore.failover).
        tags = {FLAG_TAG: "1"} if self.config.respawn_on_node_failure else None
        self.serf = serf = SerfAgent(
            node_name=self.name,
            data_dir=node.data_dir / "serf",
            bind=self.config.cluster_bind_addr,
            rpc_addr=self.config.serf_rpc_addr,
            encrypt_key=self.config.encrypt,
            profile=self.config.serf_profile,  # type: ignore[arg-type]
            tags=tags,
        )
        await serf.start()
        server = make_server(create_app(node, self._allowed_hosts()), self.http_host, self.http_port,
                             server_context(self.identity) if self.identity else None,
                             on_peer_connection=lambda _node: node.metrics.peer_connections.inc(), member_host=members,
                             on_refused=lambda budget: node.metrics.refused_connections.labels(budget=budget).inc())
        serve = asyncio.create_task(server.serve())
        while not server.started:
            if serve.done():
                await serf.stop()
                raise ConfigError(f"cannot serve the API on {self.config.http_bind_addr} (address in use?)")
            await asyncio.sleep(0.02)
        self.prober = Prober(self._probe_targets, member_pinger(echo, node.view.peer), ProbeWindow(),
                             interval=self.config.probe_interval, links=node.probes, on_result=node.reputation.probe_result)
        self.publisher = BeaconPublisher(
            node=self.name, key=self.key, api=self._api_advertise(),
            price_per_gb=self.config.beacon_price, reputation=self.config.beacon_reputation, region=self.config.region,
            sample=self._sample, set_tags=serf.publish_tags, cluster_size=node.view.size,
            ended_accepted_at=lambda: node.manager.ended_accepted_at, metrics=node.metrics,
            admission=(Admission(self.identity.not_after, self.identity.admission, self.identity.reputation)
                       if self.identity else None),
        )
        node.store.changed.subscribe(self.publisher.wakeup.set)  # load moved: maybe news for the beacon
        await self.publisher.publish_if_due()
        node.view.update(await serf.rpc.members())
        node.ready = True
        freeze_startup_heap()  # a full collection no longer stalls the loop for a tenth of a second (hypercore.heap)
        self._tasks = [asyncio.create_task(c) for c in (self._watch_members(), self.prober.run(), self.publisher.run(),
                                                         node.failover.run(), node.directory.run(),
                                                         periodic(EXCHANGE_S, node.reputation.exchange,
                                                                  what="reputation exchange", log=log),
                                                         periodic(COORDINATES_S, self._refresh_coordinates,
                                                                  what="coordinate refresh", log=log))]
        if self.config.join:
            self._tasks.append(asyncio.create_task(self._join()))
        if (gc_after := self.config.gc_after_seconds) is not None:
            self._tasks.append(asyncio.create_task(GarbageCollector(node.manager, gc_after).run()))
        log.info("node agent started", extra={
            "node": self.name, "api": self.config.http_bind_addr, "gossip": self.config.cluster_bind_addr,
            "region": self.config.region or "none",
            "beacon_id": self.publisher.beacon_id, "capabilities": ",".join(node.manager.capabilities) or "none"})
        await self._stop.wait()
        log.info("shutting down: leaving the cluster", extra={"node": self.name})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._oneshots.close()
        with contextlib.suppress(SerfError, OSError):
            await serf.stop(leave=True)
        server.should_exit = True
        await serve
        echo.close()
        await node.close()
        log.info("node agent stopped", extra={"node": self.name})
