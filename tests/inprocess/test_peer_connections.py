"""The API server tells of each connection another node opens (hypercore_peer_connections_total): each is a
mutual-TLS handshake, what a request to a node met for the first time costs most (docs/scale.md). Real uvicorn
and aiohttp over loopback with certificates of one cluster; a user's connection (no certificate) is not a node's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hypercore.api.server import make_server
from hypercore.devcluster import Pki, free_port
from hypercore.identity.pki import NodeIdentity
from hypercore.identity.tls import client_context, server_context


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_each_connection_a_node_opens_is_counted_once_and_a_users_not_at_all(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    server_identity = NodeIdentity.load(pki.ca_file, *pki.node("n0"), "n0")
    node_identity = NodeIdentity.load(pki.ca_file, *pki.node("n1"), "n1")
    heard: list[str] = []
    port = free_port()
    server = make_server(app, "127.0.0.1", port, server_context(server_identity), on_peer_connection=heard.append)
    serve = asyncio.create_task(server.serve())
    url = f"https://127.0.0.1:{port}/"
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        node_tls = client_context(node_identity, None)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=node_tls)) as kept:
            for _ in range(3):  # one connection, kept alive: one handshake
                async with kept.get(url, server_hostname="n0") as r:
                    assert r.status == 200
        assert heard == ["n1"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=node_tls, force_close=True)) as fresh:
            for _ in range(2):  # a new connection each time: two more
                async with fresh.get(url, server_hostname="n0") as r:
                    assert r.status == 200
        assert heard == ["n1", "n1", "n1"]
        user_tls = client_context(None, pki.ca_file)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=user_tls, force_close=True)) as user:
            async with user.get(url, server_hostname="n0") as r:
                assert r.status == 200
        assert heard == ["n1", "n1", "n1"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serve, 5.0)


async def test_a_connection_that_never_completes_a_request_is_closed_but_a_nodes_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by attacking the API: uvicorn held a TLS connection that sent nothing, or a byte now and then, for
    ever. A user's first request must now have its headers in within FIRST_HEADERS_S; a node's connection may
    wait its keep-alive (the node transport opens connections ahead of their requests)."""
    from hypercore.api import server as server_module

    monkeypatch.setattr(server_module, "FIRST_HEADERS_S", 0.5)
    pki = Pki(tmp_path / "pki")
    server_identity = NodeIdentity.load(pki.ca_file, *pki.node("n0"), "n0")
    node_identity = NodeIdentity.load(pki.ca_file, *pki.node("n1"), "n1")
    port = free_port()
    server = make_server(app, "127.0.0.1", port, server_context(server_identity))
    serve = asyncio.create_task(server.serve())

    async def connect(tls: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="n0")

    async def closed(reader: asyncio.StreamReader, within: float) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), within) == b""
        except asyncio.TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True

    try:
        while not server.started:
            await asyncio.sleep(0.01)
        user_tls = client_context(None, pki.ca_file)
        # (Each writer is kept: a StreamWriter that is collected closes its connection from this side.)
        silent, silent_writer = await connect(user_tls)
        dribbler, writer = await connect(user_tls)
        writer.write(b"GET / HTTP/1.1\r\nHost: n0\r\n")
        node_reader, node_writer = await connect(client_context(node_identity, None))
        for _ in range(4):  # a header byte every 0.2 s: data arrives, headers never complete
            await asyncio.sleep(0.2)
            writer.write(b"x")
        assert await closed(silent, 1.0) and await closed(dribbler, 1.0)
        assert not await closed(node_reader, 0.5)  # a node's connection waits for its request

        served, writer = await connect(user_tls)  # a request in time is answered, as before
        writer.write(b"GET / HTTP/1.1\r\nHost: n0\r\n\r\n")
        assert (await asyncio.wait_for(served.readuntil(b"ok"), 2.0)).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serve, 5.0)
