"""Transport.warm opens a node's connection ahead of the request that follows (issue 10: at 100 nodes a
spawn's attempt waited for the claim on the holders, then opened a new mutual-TLS connection to the chosen
node; opened during the claim, it is ready when the claim is done).

Real parts: a TLS 1.3 server with this cluster's node certificate on loopback, speaking just enough HTTP/1.1
(keep-alive) to answer, and counting the connections it accepts; the client is the node transport with its
mutual-TLS context. warm() uses aiohttp's connector below its public request API, so a release of aiohttp
that changes that fails here.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hypercore.identity.tls import client_context, server_context
from hypercore.membership.view import Peer
from hypercore.transport import Transport


class CountingServer:
    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
                             b'{"ok":true}')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def served(load_node) -> AsyncIterator[tuple[CountingServer, Transport]]:
    server_id, client_id = load_node("node-a"), load_node("node-b")
    counting = CountingServer()
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0, ssl=server_context(server_id))
    port = server.sockets[0].getsockname()[1]
    transport = Transport(lambda n: Peer(n, "127.0.0.1", port) if n == "node-a" else None,
                          client_context(client_id, None))
    try:
        yield counting, transport
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_a_request_after_warm_uses_the_connection_it_opened(served: tuple[CountingServer, Transport]) -> None:
    counting, transport = served
    transport.warm("node-a")
    for _ in range(100):
        if counting.connections:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the handshake done, the connection in the pool
    assert counting.connections == 1 and counting.requests == 0  # opened, nothing sent
    r = await transport.request("node-a", "POST", "/v1/local/workloads", json_body={"x": 1})
    assert r.status == 200 and r.json() == {"ok": True}
    assert counting.connections == 1 and counting.requests == 1


async def test_a_request_sent_while_the_connection_is_opening_waits_for_it(
        served: tuple[CountingServer, Transport]) -> None:
    counting, transport = served
    transport.warm("node-a")
    r = await transport.request("node-a", "GET", "/v1/x")  # at once: the warm-up is still under way
    assert r.status == 200
    assert counting.connections == 1 and counting.requests == 1


async def test_without_warm_two_requests_at_once_open_two_connections(
        served: tuple[CountingServer, Transport]) -> None:
    counting, transport = served  # the counting itself: what warm saves
    await asyncio.gather(transport.request("node-a", "GET", "/v1/x"), transport.request("node-a", "GET", "/v1/y"))
    assert counting.connections == 2 and counting.requests == 2


async def test_warm_of_a_node_that_is_no_peer_does_nothing(served: tuple[CountingServer, Transport]) -> None:
    counting, transport = served
    transport.warm("rogue")  # not admitted by the view: never dialled
    await asyncio.sleep(0.05)
    assert counting.connections == 0 and not transport._warming
    from hypercore.transport import PeerUnreachable
    with pytest.raises(PeerUnreachable):
        await transport.request("rogue", "GET", "/v1/x")


async def test_a_node_called_within_the_keep_alive_is_not_warmed_again(served: tuple[CountingServer, Transport]) -> None:
    """Its connection is in the pool, or busy with a call (a burst of spawns to one node): a warm-up would
    only open one more connection and make the calls that follow wait for it."""
    counting, transport = served
    assert (await transport.request("node-a", "GET", "/v1/x")).status == 200
    slow = asyncio.ensure_future(transport.request("node-a", "GET", "/v1/y"))  # in flight
    transport.warm("node-a")
    assert not transport._warming
    assert (await slow).status == 200
    assert counting.connections == 1 and counting.requests == 2


def test_what_warm_remembers_of_past_calls_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Members come and go; the record of when each was last called must not grow with every name ever seen."""
    from hypercore import transport as transport_module

    monkeypatch.setattr(transport_module, "CALLED_KEPT", 100)
    transport = Transport(lambda n: Peer(n, "127.0.0.1", 1), None)
    long_ago = time.monotonic() - transport_module.KEEPALIVE_S - 1.0
    transport._called = {f"gone{i}": long_ago for i in range(100)}  # members called long ago
    for i in range(5):
        transport._target(f"n{i}")  # calls now
    assert set(transport._called) == {"n0", "n1", "n2", "n3", "n4"}
