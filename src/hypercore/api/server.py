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
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hypercore.api.auth import PEER_NODE
from hypercore.api.connections import ConnectionBudget, MemberHost, bounded_listener
from hypercore.identity.tls import peer_node_name

log = logging.getLogger("hypercore.api")

SERVER_KEEPALIVE_S = 255.0  # longer than the client's (hypercore.transport.KEEPALIVE_S): it closes first
# A user's first request must have sent its headers this long after the connection was made. Uvicorn has no
# such deadline: a connection that sent nothing, or a byte now and then, was held for ever (an attacker's
# thousands of them, each a descriptor and a TLS state). Later requests, and every request of a node (whose
# transport may open a connection well before its request: hypercore.transport.Transport.warm), get the
# keep-alive's time instead, counted from the previous response and stopped only by complete headers.
FIRST_HEADERS_S = 30.0


def _fresh_date(state: Any, config: uvicorn.Config) -> None:
    """The Date header of the current second in the server's default headers (uvicorn sets it from a loop
    that wakes 10 times a second; here it is brought up to date by the first request of each second)."""
    now = int(time.time())
    if getattr(state, "hc_date_second", None) != now:
        state.hc_date_second = now
        date = [(b"date", formatdate(now, usegmt=True).encode())] if config.date_header else []
        state.default_headers = [*date, *config.encoded_headers]


class _PeerAwareProtocol(HttpToolsProtocol):
    _peer_node: str | None = None
    # Told the name of each node that opens a connection here (make_server's on_peer_connection): every one is
    # a mutual-TLS handshake, the costliest part of a request to a node met for the first time (docs/scale.md).
    on_peer_connection: Callable[[str], None] | None = None

    _headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer_node = peer_node_name(transport.get_extra_info("ssl_object"))
        if self._peer_node is not None and self.on_peer_connection is not None:
            self.on_peer_connection(self._peer_node)
        self._await_headers(FIRST_HEADERS_S if self._peer_node is None else SERVER_KEEPALIVE_S)

    def _await_headers(self, seconds: float) -> None:
        """Close the connection unless a request's headers are complete within `seconds` (FIRST_HEADERS_S)."""
        self._stop_waiting()
        self._headers_due = self.loop.call_later(seconds, self.timeout_keep_alive_handler)

    def _stop_waiting(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers(SERVER_KEEPALIVE_S)  # the next request's

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        _fresh_date(self.server_state, self.config)  # before on_headers_complete hands the headers over
        self.scope["extensions"] = {PEER_NODE: self._peer_node}  # type: ignore[typeddict-unknown-key]


class ApiServer(uvicorn.Server):
    """uvicorn.Server that leaves signals to the agent (it owns SIGTERM/SIGINT/SIGHUP) and listens on a socket
    that holds no more connections than its budget (hypercore.api.connections)."""

    budget: ConnectionBudget | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None and self.budget is not None:
            try:
                sockets = [bounded_listener(self.config.host, self.config.port, self.budget)]
            except OSError as exc:  # ends serving; the agent sees it did not start and says so
                log.error("cannot listen for the API", extra={"address": f"{self.config.host}:{self.config.port}",
                                                              "error": str(exc)})
                return
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    # uvicorn's own loop wakes up 10 times a second, to refresh the Date header once a second and to notice
    # should_exit; an idle agent paid for every wake-up (once a second, then: 0.013 % of a core, a twelfth
    # of an idle agent's event-loop work). Requests now bring the Date header up to date (_fresh_date), and
    # setting should_exit wakes the loop at once.
    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self.__dict__.get("_should_exit", False)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.__dict__["_should_exit"] = value
        if value:
            self._exit().set()

    def _exit(self) -> asyncio.Event:
        if "_exit_event" not in self.__dict__:  # uvicorn's __init__ sets should_exit before ours could run
            self.__dict__["_exit_event"] = asyncio.Event()
        return self.__dict__["_exit_event"]

    async def main_loop(self) -> None:
        _fresh_date(self.server_state, self.config)
        await self._exit().wait()


def make_server(app: Any, host: str, port: int, tls: ssl.SSLContext | None,
                on_peer_connection: Callable[[str], None] | None = None, *,
                member_host: MemberHost | None = None,
                on_refused: Callable[[str], None] | None = None) -> ApiServer:
    """`on_peer_connection(node)` hears of every connection a node (a client with a node certificate) opens;
    `member_host(ip)` says whether an admitted member advertises that address (its connections share the
    members' budget), `on_refused(budget)` of each connection closed over a budget."""
    protocol = type("PeerAwareProtocol", (_PeerAwareProtocol,),
                    {"on_peer_connection": staticmethod(on_peer_connection) if on_peer_connection else None})
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off", http=protocol,
        # Served directly, never behind a proxy: no X-Forwarded-* header is anyone's word for the client's address.
        proxy_headers=False,
        # Longer than the node client's keep-alive (hypercore.transport.KEEPALIVE_S): peers that call now and
        # then (probes, replication) reuse one TLS connection instead of a handshake per call, and the
        # client, not the server, closes an idle one, so a call never lands on a connection being closed.
        timeout_keep_alive=SERVER_KEEPALIVE_S,
        ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
    )
    server = ApiServer(config)
    server.budget = ConnectionBudget(member_host, on_refused=on_refused)
    return server
