"""Transport.preconnect: a connection opened ahead of a call that will follow, on real sockets (loopback).

A placement's attempt goes to a node chosen a moment before, after its claim on the request id's buddies; at
100 nodes and beyond that node is rarely one this node called within the keep-alive time, so the attempt paid
TCP's and TLS's handshakes on its way. The owner now opens the connection while the claim travels.
(Plain HTTP here: the connection reuse is what is tested; TLS only makes each new connection dearer.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hypercore.membership.view import Peer
from hypercore.transport import Transport


class Server:
    """A loopback HTTP server that notes, per request, the client port (one per connection)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append((request.path, peer[1] if peer else -1))
        if request.path == "/v1/ping":
            await asyncio.sleep(0.05)  # a handshake's worth of time: the call after it must wait, not dial again
        return web.json_response({"node": "b"})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def transport(server: Server) -> AsyncIterator[tuple[Transport, Counter[str]]]:
    counted: Counter[str] = Counter()
    t = Transport(lambda name: Peer(name, "127.0.0.1", server.port) if name == "b" else None, None,
                  on_request=lambda route: counted.update([route]))
    try:
        yield t, counted
    finally:
        await t.close()


async def test_a_call_after_a_preconnect_uses_its_connection(server: Server,
                                                             transport: tuple[Transport, Counter[str]]) -> None:
    t, counted = transport
    t.preconnect("b")
    r = await t.request("b", "POST", "/v1/local/workloads", json_body={})
    assert r.status == 200
    assert [path for path, _port in server.seen] == ["/v1/ping", "/v1/local/workloads"]
    assert len({port for _path, port in server.seen}) == 1  # one connection: the call waited for the open one
    assert counted == Counter({"GET /v1/ping": 1, "POST /v1/local/workloads": 1})  # the preconnect is a request


async def test_a_peer_called_lately_is_not_preconnected(server: Server,
                                                        transport: tuple[Transport, Counter[str]]) -> None:
    t, counted = transport
    await t.request("b", "GET", "/v1/local/workloads")
    t.preconnect("b")  # its connection is kept alive: nothing to open
    t.preconnect("b")
    await t.request("b", "GET", "/v1/local/workloads")
    assert [path for path, _port in server.seen] == ["/v1/local/workloads"] * 2
    assert len({port for _path, port in server.seen}) == 1
    assert counted["GET /v1/ping"] == 0


async def test_one_preconnect_at_a_time_and_none_to_a_stranger(server: Server,
                                                               transport: tuple[Transport, Counter[str]]) -> None:
    t, counted = transport
    for _ in range(3):
        t.preconnect("b")  # while one is under way, the others add nothing
    t.preconnect("stranger")  # not an admitted member: never dialled
    await asyncio.sleep(0.3)
    assert [path for path, _port in server.seen] == ["/v1/ping"]
    assert counted == Counter({"GET /v1/ping": 1})
