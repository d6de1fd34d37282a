"""The API server tells of each connection another node opens (hypercore_peer_connections_total): each is a
mutual-TLS handshake, what a request to a node met for the first time costs most (docs/scale.md). Real uvicorn
and aiohttp over loopback with certificates of one cluster; a user's connection (no certificate) is not a node's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

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
