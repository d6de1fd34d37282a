"""Serving the API: uvicorn over TLS, with the verified client certificate's node name in each request.

Users connect without a client certificate; nodes present theirs, and the
handshake verifies it against the cluster CA (CERT_OPTIONAL). Uvicorn does
not pass TLS details to the app, so a small protocol subclass reads the name
the verified certificate certifies, once per connection, and puts it in the
ASGI scope, where hypercore.api.auth looks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hypercore.api.auth import PEER_NODE
from hypercore.identity.tls import peer_node_name

SERVER_KEEPALIVE_S = 75.0
TICK_S = 1.0  # how often the server looks for a shutdown request (and refreshes its Date header)


class _PeerAwareProtocol(HttpToolsProtocol):
    _peer_node: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer_node = peer_node_name(transport.get_extra_info("ssl_object"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {PEER_NODE: self._peer_node}  # type: ignore[typeddict-unknown-key]


class ApiServer(uvicorn.Server):
    """uvicorn.Server that leaves signals to the agent (it owns SIGTERM/SIGINT/SIGHUP)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn's own loop wakes up 10 times a second (to refresh the Date header once a second and
        # to notice should_exit); an idle agent pays for every wake-up, so once a second is enough here.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick refreshes the Date header when counter % 10 == 0
            await asyncio.sleep(TICK_S)


def make_server(app: Any, host: str, port: int, tls: ssl.SSLContext | None) -> ApiServer:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off", http=_PeerAwareProtocol,
        # Served directly, never behind a proxy: no X-Forwarded-* header is anyone's word for the client's address.
        proxy_headers=False,
        # Longer than the node client's keep-alive (hypercore.transport.KEEPALIVE_S): peers that call now and
        # then (probes, replication) reuse one TLS connection instead of a handshake per call, and the
        # client, not the server, closes an idle one, so a call never lands on a connection being closed.
        timeout_keep_alive=SERVER_KEEPALIVE_S,
        ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
    )
    return ApiServer(config)
