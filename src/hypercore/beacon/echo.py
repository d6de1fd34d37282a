"""Probes over UDP: one datagram to a peer, one back, answered at the port number of the peer's API.

Why not `GET /v1/ping` over the node's mutual-TLS connections: probes are an
idle cluster's steadiest traffic (about 1.5 a second sent and 1.5 answered
per node at any size, hypercore.beacon.probe.PeerLinks), and each one went
through TLS records, aiohttp's client and the HTTP server: half of an idle
agent's CPU (docs/scale.md, "Per-second costs per node"). A datagram costs a read and a write.
It also measures the link more plainly: a lost packet is a lost probe, where
over TCP it came back as an answer late by a retransmission timeout.

What a probe proves is unchanged. It goes to the address of the member's
admitted, signed beacon (the only address a node ever calls), and the answer
must carry the request's 16 random bytes, so it can come only from whoever
received the request there: a node cannot answer before its request arrives,
so it cannot look nearer than it is; an off-path host cannot answer for it.
The answer's source address is not checked (a multi-homed host may answer
from another address); the nonce is what ties it to the request. A request
also names the member it is for (a digest of its name), and a node answers
only requests for its own name: a member that advertises another node's
address, to borrow that node's nearness, gets no answer from it (over HTTPS
the TLS name check did the same; only a node that colludes would answer).

What a stranger can do with it: send requests. An answer is never larger
than its request (no amplification), and answers are rate-limited: each
admitted member's address has a budget of its own (MEMBER_ANSWERS_PER_S, far
above the ≈ 1.5 probes a second a node is sent by all members together), and
every other source shares one (STRANGER_ANSWERS_PER_S), so a flood of
well-formed requests from outside (a node's name is public) cannot use up
what members' probes need. Only one that forges a member's source address can
use up that member's budget, and only that one's. Anything that is not a
well-formed request for this node or an answer it waits for is dropped
without a word. An answer read after its probe's time was up counts as lost.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

from hypercore.errors import HypercoreError
from hypercore.ratelimit import TokenBuckets

REQUEST = b"HCq1"
ANSWER = b"HCa1"
NONCE = 16
NAMED = 12  # bytes of the addressed node's name digest
SIZE = 4 + NONCE + NAMED  # a request and its answer: kind, nonce, whom it is for (the same size both ways)
# Answers: each member's source address has its own budget, and every other source shares one, so a
# stranger's flood (a node's name is public) cannot use up what members' probes need.
MEMBER_ANSWERS_PER_S = 50.0  # per member address: a node is sent ≈ 1.5 probes a second by all members together
MEMBER_BURST = 500.0  # a join: every member probes the newcomer at once (one address for all, on one machine)
STRANGER_ANSWERS_PER_S = 100.0  # every other source together
STRANGER_BURST = 200.0
LOOKUP_KEPT_S = 60.0  # a host name's addresses are looked up again after this
LOOKUP_THREADS = 2  # lookups under way at once, in threads of their own; a probe that needs another is lost
MAX_LOOKUPS = 1024  # host names kept (finished lookups are dropped past it)
MAX_PENDING = 4096  # probes waiting for an answer; more are reported lost at once (never happens in use)


def name_digest(node: str) -> bytes:
    """Whom a probe is for: a member that advertises another host's address gets no answer from that host."""
    return hashlib.blake2b(node.encode(), digest_size=NAMED, person=b"hypercore-probe").digest()

Address = tuple[str, int]


class _Located(Protocol):
    host: str
    port: int


class EchoError(HypercoreError):
    """The probe socket could not be opened (the port is in use for UDP)."""


class _Round:
    """The answers to one batch of probes: each one's arrival time, and a future done when all are in."""

    __slots__ = ("arrived", "waiting", "done")

    def __init__(self, count: int, done: asyncio.Future[None]) -> None:
        self.arrived: list[float | None] = [None] * count
        self.waiting = count
        self.done = done


class Echo(asyncio.DatagramProtocol):
    """Answers probes and sends this node's own, on one UDP socket (see the module docstring)."""

    def __init__(self, node: str, *, member_host: Callable[[str], bool] = lambda _host: False,
                 member_rate: float = MEMBER_ANSWERS_PER_S, member_burst: float = MEMBER_BURST,
                 stranger_rate: float = STRANGER_ANSWERS_PER_S, stranger_burst: float = STRANGER_BURST,
                 answered: Callable[[], None] = lambda: None, refused: Callable[[], None] = lambda: None) -> None:
        """`member_host(ip)`: whether an admitted member serves there (its requests get a budget of their
        own); `answered()` / `refused()` are told of each request answered / not answered (over budget)."""
        self._me = name_digest(node)  # requests for any other name are not answered
        self._transport: asyncio.DatagramTransport | None = None
        self._member_host = member_host
        self._members = TokenBuckets(member_rate, member_burst)  # by member address
        self._strangers = TokenBuckets(stranger_rate, stranger_burst)  # one bucket, "", for every other source
        self._resolver = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="probe-lookup")
        self._pending: dict[bytes, tuple[_Round, int]] = {}
        self._lookups: dict[str, tuple[float, asyncio.Task[Any]]] = {}  # host name → (when, its lookup)
        self._answered, self._refused = answered, refused

    # -- the socket ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # asyncio's is not a subclass of it

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) != SIZE:
            return
        kind = data[:4]
        if kind == REQUEST:
            if self._transport is None or data[4 + NONCE:] != self._me:
                return
            host = str(addr[0]).removeprefix("::ffff:")  # an IPv4 member seen by an IPv6 socket
            if (self._members.take(host) if self._member_host(host) else self._strangers.take("")) == 0.0:
                self._transport.sendto(ANSWER + data[4:], addr)
                self._answered()
            else:
                self._refused()
        elif kind == ANSWER:
            waiting = self._pending.pop(data[4:4 + NONCE], None)
            if waiting is not None:
                at = time.perf_counter()  # here, not when the waiting task resumes: the link, not the loop
                batch, index = waiting
                batch.arrived[index] = at
                batch.waiting -= 1
                if batch.waiting == 0 and not batch.done.done():
                    batch.done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier datagram (port unreachable): that probe is lost, which it reports

    def close(self) -> None:
        for _, task in self._lookups.values():
            task.cancel()
        self._resolver.shutdown(wait=False, cancel_futures=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- probing -----------------------------------------------------------------------

    async def ping_many(self, targets: Sequence[tuple[str, Address] | None], timeout: float) -> list[float | None]:
        """One probe to each (node name, address) at once: each one's round trip in ms, or None (no target,
        no answer within `timeout` s). Returns when every answer is in or the time is up. Only the node of
        that name answers (a host that is another node drops a probe meant for this name)."""
        loop = asyncio.get_running_loop()
        targets = await self._resolved(targets, timeout)
        transport = self._transport  # after the lookups: the echo may have been closed meanwhile
        batch = _Round(len(targets), loop.create_future())
        sent: list[tuple[bytes, float] | None] = []
        for index, target in enumerate(targets):
            if target is None or transport is None or len(self._pending) >= MAX_PENDING:
                sent.append(None)
                batch.waiting -= 1
                continue
            nonce = os.urandom(NONCE)
            self._pending[nonce] = (batch, index)
            start = time.perf_counter()
            # An address the socket's family can send to (_resolved); a send that fails (no route) is
            # reported to error_received by asyncio, and its probe waits out the time as a lost one.
            transport.sendto(REQUEST + nonce + name_digest(target[0]), target[1])
            sent.append((nonce, start))
        try:
            if batch.waiting > 0:
                timer = loop.call_later(timeout, lambda: batch.done.done() or batch.done.set_result(None))
                try:
                    await batch.done
                finally:
                    timer.cancel()
        finally:
            for probe in sent:
                if probe is not None:
                    self._pending.pop(probe[0], None)  # answered, or given up (also when cancelled)
        out: list[float | None] = []
        for probe, at in zip(sent, batch.arrived):
            rtt = None if probe is None or at is None else at - probe[1]
            out.append(None if rtt is None or rtt > timeout else rtt * 1000.0)  # read after the time was up: lost
        return out

    async def _resolved(self, targets: Sequence[tuple[str, Address] | None], timeout: float
                        ) -> list[tuple[str, Address] | None]:
        """The targets with addresses this socket can send to: an IP address as it is (an IPv4 one mapped for
        an IPv6 socket), a host name looked up without blocking the loop, within `timeout` s (sendto would
        look it up itself and block the loop: a member's beacon may name a host whose lookup takes long)."""
        family = self._transport.get_extra_info("socket").family if self._transport is not None else socket.AF_INET
        out: list[tuple[str, Address] | None] = []
        lookups: dict[int, asyncio.Task[Any]] = {}
        for index, target in enumerate(targets):
            out.append(None)
            if target is None:
                continue
            host, port = target[1]
            try:
                address = _fit(ipaddress.ip_address(host), port, family)
            except ValueError:
                lookup = self._lookup(host)
                if lookup is not None:
                    lookups[index] = lookup
                continue
            out[index] = (target[0], address) if address is not None else None
        if lookups:
            found = await asyncio.gather(*(asyncio.wait_for(asyncio.shield(task), timeout) for task in lookups.values()),
                                         return_exceptions=True)
            for index, infos in zip(lookups, found):
                if isinstance(infos, BaseException):
                    continue  # no such host, or no answer in time: that probe is lost
                name, (_host, port) = targets[index]  # type: ignore[misc]
                fitted = [a for info in infos if (a := _fit(ipaddress.ip_address(info[4][0]), port, family))]
                out[index] = (name, fitted[0]) if fitted else None
        return out

    def _lookup(self, host: str) -> asyncio.Task[Any] | None:
        """`host`'s addresses, looked up once per LOOKUP_KEPT_S in a thread of the echo's own (getaddrinfo
        blocks, and a member's host may be one whose lookup takes long: the loop's shared threads, which
        workload starts use, are left alone); None when LOOKUP_THREADS lookups are under way already."""
        now = time.monotonic()
        kept = self._lookups.get(host)
        if kept is not None and (not kept[1].done() or now - kept[0] < LOOKUP_KEPT_S):
            return kept[1]
        if sum(not task.done() for _, task in self._lookups.values()) >= LOOKUP_THREADS:
            return None
        if len(self._lookups) >= MAX_LOOKUPS:
            for name in [n for n, (_, task) in self._lookups.items() if task.done()]:
                del self._lookups[name]
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.run_in_executor(
            self._resolver, functools.partial(socket.getaddrinfo, host, None, 0, socket.SOCK_DGRAM)))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its failure is the probes' loss, not a log line
        self._lookups[host] = (now, task)
        return task

    async def ping(self, node: str, address: Address, timeout: float) -> float | None:
        return (await self.ping_many([(node, address)], timeout))[0]


def _fit(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, family: int) -> Address | None:
    """`ip`:`port` as a socket of `family` sends to it, or None when it cannot (IPv6 from an IPv4 socket)."""
    if family == socket.AF_INET6:
        return (str(ip) if ip.version == 6 else f"::ffff:{ip}", port)
    return (str(ip), port) if ip.version == 4 else None


async def open_echo(node: str, host: str, port: int, **kwargs: Any) -> Echo:
    """The probe socket on UDP `host`:`port` (the API's: a peer finds it in the beacon's API address);
    `kwargs` go to Echo."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        _, protocol = await loop.create_datagram_endpoint(lambda: Echo(node, **kwargs), local_addr=(host or "0.0.0.0", port),
                                                          family=family)
    except OSError as exc:
        raise EchoError(f"cannot answer probes on UDP {host}:{port} (the API's address): {exc.strerror or exc}") from None
    return protocol


def member_pinger(echo: Echo, locate: Callable[[str], _Located | None]
                  ) -> Callable[[Sequence[str], float], Awaitable[list[float | None]]]:
    """Probes members by name: `locate(name)` gives an admitted member's API host and port (the cluster
    view's `peer`), or None for any other name, which is then not probed at all (reported lost)."""

    def target(name: str) -> tuple[str, Address] | None:
        peer = locate(name)
        return None if peer is None else (name, (peer.host, peer.port))

    async def ping(names: Sequence[str], timeout: float) -> list[float | None]:
        return await echo.ping_many([target(name) for name in names], timeout)

    return ping
