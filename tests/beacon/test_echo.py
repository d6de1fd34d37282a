"""Probes over UDP (hypercore.beacon.echo), on real sockets on loopback.

Issue 10: probes, over HTTPS, were half of an idle agent's CPU (a TLS record, aiohttp's client and the HTTP
server each way, about 1 ms of CPU per probe on this machine). Over UDP a probe is a datagram each way. What
a probe proves must not weaken: an answer counts only with its request's nonce, so it cannot come before the
request arrived; a stranger's datagrams get no answer larger than themselves, and answers are rate-limited.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from hypercore.membership.hosts import MemberHosts
from hypercore.beacon.echo import (ANSWER, NONCE, REQUEST, SIZE, Echo, EchoError, member_pinger,
                                   name_digest, open_echo)
from hypercore.beacon.publisher import Prober
from hypercore.membership.view import Peer

LOCAL = "127.0.0.1"


@pytest.fixture
def raw() -> Iterator[socket.socket]:
    """A plain UDP socket: a peer that does whatever the test makes it do."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    sock.settimeout(1.0)
    try:
        yield sock
    finally:
        sock.close()


async def echoes(count: int, **kwargs: object) -> list[tuple[Echo, tuple[str, int]]]:
    """Echoes of nodes "e0", "e1", … on loopback, each with its address."""
    out = []
    for i in range(count):
        echo = await open_echo(f"e{i}", LOCAL, 0, **kwargs)
        out.append((echo, echo._transport.get_extra_info("sockname")[:2]))  # type: ignore[union-attr]
    return out


def received(sock: socket.socket, wait: float = 0.3) -> list[bytes]:
    sock.settimeout(wait)
    out = []
    try:
        while True:
            out.append(sock.recv(4096))
    except (TimeoutError, socket.timeout):
        return out


async def test_a_probe_is_answered_and_gives_the_round_trip() -> None:
    (a, _), (b, b_addr) = await echoes(2)
    try:
        rtts = await a.ping_many([("e1", b_addr), ("e1", b_addr), None], timeout=1.0)
        assert rtts[0] is not None and 0.0 < rtts[0] < 100.0 and rtts[1] is not None
        assert rtts[2] is None  # no address: not probed, lost
        assert not a._pending
    finally:
        a.close()
        b.close()


async def test_an_answer_counts_only_with_its_own_request_nonce(raw: socket.socket) -> None:
    """A peer that answers before it has the request (a made-up nonce) or with another nonce measures as lost;
    the answer to the request itself counts, whatever address it comes from (the nonce ties it)."""
    (a, a_addr), = await echoes(1)
    loop = asyncio.get_running_loop()
    try:
        raw.sendto(ANSWER + bytes(NONCE) + bytes(SIZE - 4 - NONCE), a_addr)  # ahead of any request
        probe = asyncio.ensure_future(a.ping("raw", raw.getsockname(), timeout=0.5))
        request, sender = await loop.run_in_executor(None, raw.recvfrom, 4096)
        assert len(request) == SIZE and request.startswith(REQUEST) and sender == a_addr
        assert request.endswith(name_digest("raw"))  # whom it is for
        wrong = bytearray(request)
        wrong[4] ^= 1
        raw.sendto(ANSWER + bytes(wrong[4:]), a_addr)
        raw.sendto(bytes(request), a_addr)  # the request itself sent back is not an answer (nor for a: not its name)
        assert await probe is None
        assert await loop.run_in_executor(None, received, raw) == []

        probe = asyncio.ensure_future(a.ping("raw", raw.getsockname(), timeout=2.0))
        request, _ = await loop.run_in_executor(None, raw.recvfrom, 4096)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:  # another source address
            other.sendto(ANSWER + request[4:], a_addr)
            assert (await probe) is not None
        assert not a._pending
    finally:
        a.close()


async def test_only_a_well_formed_request_is_answered_and_never_with_more_bytes(raw: socket.socket) -> None:
    (a, a_addr), = await echoes(1)
    loop = asyncio.get_running_loop()
    try:
        for junk in (b"", b"x", REQUEST, REQUEST + bytes(SIZE), REQUEST + bytes(1400), b"GET /v1/ping HTTP/1.1\r\n\r\n",
                     ANSWER + bytes(SIZE - 4), bytes(SIZE)):
            raw.sendto(junk, a_addr)
        assert await loop.run_in_executor(None, received, raw) == []
        request = REQUEST + b"n" * NONCE + name_digest("e0")
        raw.sendto(request, a_addr)
        assert await loop.run_in_executor(None, received, raw) == [ANSWER + request[4:]]
        raw.sendto(REQUEST + b"n" * NONCE + name_digest("e1"), a_addr)  # well formed, for another node
        assert await loop.run_in_executor(None, received, raw) == []
    finally:
        a.close()


async def test_answers_are_rate_limited(raw: socket.socket) -> None:
    counts = {"answered": 0, "refused": 0}
    (a, a_addr), = await echoes(1, stranger_rate=0.001, stranger_burst=5,
                                answered=lambda: counts.__setitem__("answered", counts["answered"] + 1),
                                refused=lambda: counts.__setitem__("refused", counts["refused"] + 1))
    loop = asyncio.get_running_loop()
    try:
        for i in range(12):
            raw.sendto(REQUEST + i.to_bytes(NONCE, "big") + name_digest("e0"), a_addr)
        answers = await loop.run_in_executor(None, received, raw)
        assert len(answers) == 5 and counts == {"answered": 5, "refused": 7}
    finally:
        a.close()


async def test_a_strangers_flood_does_not_use_up_what_members_probes_need() -> None:
    """Found by attacking it: with one budget for every source, 1,500 well-formed requests a second from
    outside (a node's name is public) left 1 % of members' probes answered, and each miss is loss and
    reputation evidence against an honest node. Members' addresses now have budgets of their own."""
    (victim, victim_addr), = await echoes(1, member_host=lambda host: host == "127.0.0.1",
                                          stranger_rate=0.001, stranger_burst=5)
    (member, _), = [(await open_echo("m", "127.0.0.1", 0), None)]
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.2", 0))  # another loopback address: not a member's
        try:
            for i in range(200):
                stranger.sendto(REQUEST + i.to_bytes(NONCE, "big") + name_digest("e0"), victim_addr)
            assert len(await loop.run_in_executor(None, received, stranger)) == 5  # the strangers' budget
            rtts = await member.ping_many([("e0", victim_addr)] * 20, timeout=1.0)
            assert all(r is not None for r in rtts)  # the member's probes all answered
        finally:
            victim.close()
            member.close()


async def test_members_hosts_are_read_again_only_after_a_change_and_not_too_often() -> None:
    clock, reads = [0.0], []
    hosts = MemberHosts(lambda: reads.append(1) or ["10.0.0.1"], clock=lambda: clock[0])
    assert hosts("10.0.0.1") and not hosts("10.0.0.2") and len(reads) == 1
    hosts.stale()
    assert hosts("10.0.0.1") and len(reads) == 1  # changed, but read less than 10 s ago
    clock[0] = 11.0
    assert hosts("10.0.0.1") and len(reads) == 2
    assert hosts("10.0.0.1") and len(reads) == 2  # nothing changed since


async def test_members_hosts_are_compared_as_the_socket_reports_a_source() -> None:
    # A beacon's IPv6 address in a long form, or an IPv4 one mapped, names the same member as the datagram's
    # source address, which the socket reports in the short form (echo strips the mapping of an IPv4 source).
    hosts = MemberHosts(lambda: ["0:0:0:0:0:0:0:1", "::ffff:10.0.0.7", "node-a.example"])
    assert hosts("::1") and hosts("10.0.0.7") and hosts("node-a.example") and not hosts("10.0.0.8")


async def test_the_nodes_own_host_is_a_members_before_the_view_has_any() -> None:
    # Nodes on one machine share its address; the first read may come before the view knows any member, and
    # is not read again for MEMBER_HOSTS_S: meanwhile they shared the strangers' budget (API connections too).
    hosts = MemberHosts(lambda: [], own="0:0:0:0:0:0:0:1")
    assert hosts("::1") and not hosts("::2")


async def test_a_lost_or_cancelled_probe_leaves_nothing_waiting(raw: socket.socket) -> None:
    (a, _), = await echoes(1)
    try:
        assert await a.ping("raw", raw.getsockname(), timeout=0.2) is None  # never answered
        task = asyncio.ensure_future(a.ping_many([("raw", raw.getsockname())] * 3, timeout=5.0))
        await asyncio.sleep(0.05)
        assert len(a._pending) == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not a._pending
    finally:
        a.close()


async def test_the_prober_probes_admitted_members_only_and_records_each(raw: socket.socket) -> None:
    """Names resolve through the view's `peer` (admitted, alive members only): a rogue's address, which the
    view does not give, gets no datagram, and its probe is a loss."""
    (a, _), (b, b_addr) = await echoes(2)
    peers = {"e1": Peer("e1", *b_addr)}
    heard: list[tuple[str, float | None]] = []
    prober = Prober(lambda: ["e1", "rogue"], member_pinger(a, peers.get), sample_size=2, timeout=0.5,
                    on_result=lambda node, rtt: heard.append((node, rtt)))
    try:
        await prober.round()
        results = dict(heard)
        assert set(results) == {"e1", "rogue"} and results["e1"] is not None and results["rogue"] is None
        assert prober.links.stats("e1").latency_ms is not None  # type: ignore[union-attr]
        assert prober.links.stats("rogue").packet_loss == 100.0  # type: ignore[union-attr]
        assert await asyncio.get_running_loop().run_in_executor(None, received, raw) == []
    finally:
        a.close()
        b.close()


async def test_a_port_in_use_is_named() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind((LOCAL, 0))
        port = held.getsockname()[1]
        with pytest.raises(EchoError, match=rf"UDP 127\.0\.0\.1:{port}"):
            await open_echo("e0", LOCAL, port)


async def test_a_member_that_advertises_another_nodes_address_gets_no_answer_from_it() -> None:
    """Over HTTPS the TLS name check stopped this; over UDP the request names whom it is for. "x" advertises the
    address of "e1", which is near: e1 answers probes for e1 only, so x measures as lost, not near."""
    (a, _), (b, b_addr) = await echoes(2)
    peers = {"e1": Peer("e1", *b_addr), "x": Peer("x", *b_addr)}
    try:
        near, borrowed = await member_pinger(a, peers.get)(["e1", "x"], 0.5)
        assert near is not None and borrowed is None
    finally:
        a.close()
        b.close()


async def test_a_host_name_is_looked_up_without_blocking_the_loop_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A beacon's API address may name a host. sendto() would look it up itself, blocking the event loop for as
    long as the lookup takes; the echo looks it up in a thread of its own, once per host, at most two at a time
    (a member whose names never resolve must not hold the loop's shared threads, which workload starts use)."""
    import hypercore.beacon.echo as echo_module

    (a, _), (b, b_addr) = await echoes(2)
    loop = asyncio.get_running_loop()
    real, calls = socket.getaddrinfo, []

    def slow_for_some_names(host: str, *args: object, **kwargs: object) -> object:
        calls.append(host)
        if host.endswith(".slow.test"):
            time.sleep(2.0)
            raise socket.gaierror("no answer")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(echo_module.socket, "getaddrinfo", slow_for_some_names)
    try:
        assert await a.ping("e1", ("localhost", b_addr[1]), timeout=1.0) is not None  # looked up, answered
        started = loop.time()
        lost = await asyncio.gather(*(a.ping("e1", (f"{i}.slow.test", b_addr[1]), timeout=0.3) for i in range(4)),
                                    a.ping("e1", ("0.slow.test", b_addr[1]), timeout=0.3))
        assert lost == [None] * 5 and loop.time() - started < 1.0  # the loop did not wait for the lookups
        assert sorted(calls[1:]) == ["0.slow.test", "1.slow.test"]  # two at a time, one per host: the rest lost
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 0.5) == "free"  # shared threads free
    finally:
        a.close()
        b.close()


async def test_ipv6_peers_are_probed_and_an_address_the_socket_cannot_reach_is_a_loss() -> None:
    a = await open_echo("e0", "::1", 0)
    b = await open_echo("e1", "::1", 0)
    b_port = b._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    try:
        assert await a.ping("e1", ("::1", b_port), timeout=1.0) is not None
        assert await a.ping("e1", ("127.0.0.1", b_port), timeout=0.3) is None  # ::1 cannot send to IPv4
    finally:
        a.close()
        b.close()


async def test_an_answer_read_after_the_time_was_up_is_a_loss(raw: socket.socket) -> None:
    """Found by attacking it: an answer waiting in the socket when the timeout fires was still counted (the
    read runs before the timer in the same pass of the loop), with the loop's stall as its round trip."""
    (a, a_addr), = await echoes(1)
    try:
        probe = asyncio.ensure_future(a.ping("raw", raw.getsockname(), timeout=0.2))
        await asyncio.sleep(0.01)  # the probe is sent
        raw.settimeout(1.0)
        request = raw.recv(64)
        raw.sendto(ANSWER + request[4:], a_addr)
        time.sleep(0.3)  # the loop is held past the probe's time (a long computation, a GC pause)
        assert await probe is None
    finally:
        a.close()
