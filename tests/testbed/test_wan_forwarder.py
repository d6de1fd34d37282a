"""The WAN emulator's loop (hypercore.testbed.wan.Forwarder) on real file descriptors.

A TUN device hands over one IP packet per read; a SOCK_SEQPACKET socket pair
keeps message boundaries the same way, so the forwarder runs here unchanged,
without root. Its test on real TUN devices in namespaces is tests/geo.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hypercore.testbed.wan import Endpoint, Forwarder, WanConfig


def packet(dst: str, payload: bytes) -> bytes:
    """An IPv4 header (only the version nibble and the destination matter to the forwarder) and a payload."""
    header = bytearray(20)
    header[0] = 0x45
    header[16:20] = bytes(int(x) for x in dst.split("."))
    return bytes(header) + payload


@pytest.fixture
def wire() -> Iterator[tuple[dict[str, socket.socket], Forwarder]]:
    config = WanConfig(24, [Endpoint("a", None, "x", "10.9.0.1", "eu"), Endpoint("b", None, "x", "10.9.0.2", "ap"),
                            Endpoint("c", None, "x", "10.9.0.3", "eu"), Endpoint("host", None, "x", "10.9.0.254", None)],
                       {"eu|eu": (0.0, 0.0), "ap|ap": (0.0, 0.0), "ap|eu": (0.080, 0.10)})
    ours: dict[str, socket.socket] = {}
    theirs_all: list[socket.socket] = []  # held: a socket object that goes away closes its fd
    fds = {}
    for endpoint in config.endpoints:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.setblocking(False)
        theirs_all.append(theirs)
        ours[endpoint.name] = mine
        fds[theirs.fileno()] = endpoint
    forwarder = Forwarder(config, fds, seed=1)
    stop = threading.Event()

    def run() -> None:  # the loop, with a way out for the test
        import select
        while not stop.is_set():
            timeout = max(0.0, forwarder.queue[0][0] - time.monotonic()) if forwarder.queue else 0.05
            ready, _, _ = select.select(list(fds), [], [], min(timeout, 0.05))
            for fd in ready:
                forwarder.receive(fd, time.monotonic())
            forwarder.release(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield ours, forwarder
    finally:
        stop.set()
        thread.join(5)
        for s in [*theirs_all, *ours.values()]:
            s.close()


def receive(sock: socket.socket, timeout: float) -> tuple[bytes, float] | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(65535), time.monotonic()
    except TimeoutError:
        return None


def test_a_packet_crosses_a_region_pair_after_half_its_round_trip_and_stays_within_a_region_undelayed(wire) -> None:
    ours, _ = wire
    sent = time.monotonic()
    ours["a"].send(packet("10.9.0.3", b"same region"))
    got = receive(ours["c"], 1.0)
    assert got is not None and got[0].endswith(b"same region") and got[1] - sent < 0.030
    # Some are lost (10 %). None may arrive before its 80 ms; the fastest of a few took about 80 ms. (Not
    # each one: on a loaded machine the scheduler can add tens of ms to any of them, once 64 ms in CI; a
    # packet sent the whole round trip, 160 ms, late or with no delay at all would still fail.)
    delays = []
    for _ in range(20):
        sent = time.monotonic()
        ours["a"].send(packet("10.9.0.2", b"far"))
        got = receive(ours["b"], 0.5)
        if got is not None:
            delays.append(got[1] - sent)
        if len(delays) == 3:
            break
    assert delays, "20 packets, none arrived"
    assert all(d >= 0.079 for d in delays) and min(delays) <= 0.110, delays


def test_packets_of_a_link_keep_their_order(wire) -> None:
    ours, _ = wire
    for i in range(50):
        ours["b"].send(packet("10.9.0.3", i.to_bytes(2, "big")))
    got = []
    while (r := receive(ours["c"], 0.5)) is not None:
        got.append(int.from_bytes(r[0][20:], "big"))
    assert got == sorted(got) and 30 <= len(got) < 50  # about 10 % lost, the rest in order


def test_loss_follows_the_link_and_the_host_is_neither_delayed_nor_dropped(wire) -> None:
    ours, forwarder = wire
    arrived = 0
    for _ in range(400):  # one at a time: a full receiver queue would drop packets too, as a TUN queue does
        ours["host"].send(packet("10.9.0.2", b"user"))
        arrived += receive(ours["b"], 0.5) is not None
    assert arrived == 400 and forwarder.stats["dropped_loss"] == 0
    for _ in range(400):
        ours["a"].send(packet("10.9.0.2", b"x"))
    time.sleep(0.3)
    assert 20 <= forwarder.stats["dropped_loss"] <= 65  # 10 % of 400, give or take


def test_what_no_endpoint_has_is_dropped_and_counted(wire) -> None:
    ours, forwarder = wire
    ours["a"].send(packet("10.9.0.77", b"nobody"))
    ours["a"].send(bytes([0x60]) + bytes(39))  # IPv6: not routed
    time.sleep(0.2)
    assert forwarder.stats["unroutable"] == 2
