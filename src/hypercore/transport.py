"""The one client for node-to-node calls.

A call names a *member*, never an address: the address comes from the
cluster view, and only for a member the view admits (alive, certified by the
cluster CA, with an API) — any other name fails before a socket is opened, so
a rogue member's listener is never dialled. Over TLS (always, unless the
agent runs with --insecure) the connection presents this node's certificate
and checks that the server's certificate, issued by the cluster CA, names
that very member: an address in a beacon cannot redirect a call to another
host.

User tokens never travel between nodes. A node that acts for a user sends
the user's verified identity in two headers, which the receiving node honours
only on its node-only routes, i.e. only from a peer that proved with its
certificate that it is a node of this cluster.

aiohttp rather than httpx: on this path every millisecond is placement
overhead, and a keep-alive aiohttp request on loopback costs about 1 ms where
httpx's async client costs about 4 ms (bench/README.md). Connections are kept
alive, so the TLS handshake is paid once per peer, not per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from hypercore.errors import HypercoreError, error_from_body
from hypercore.identity.tokens import User
from hypercore.membership.view import Peer

log = logging.getLogger("hypercore.transport")

USER_HEADER = "x-hypercore-user"
# Path segments that follow these words are values (ids, node names, request-id keys): a route label
# names the template, so that the counter's label set stays as small as the set of routes.
_VALUE_AFTER = {"workloads": "{id}", "placements": "{id}", "replicas": "{owner}", "moves": "{owner}",
                "directory": "{key}", "entries": "{id}"}
MANAGEMENT_HEADER = "x-hypercore-management"
# An idle connection to a peer is kept this long (aiohttp's default is 15 s); the server keeps it longer
# (hypercore.api.server.SERVER_KEEPALIVE_S), so it is always this side that closes it. Longer than the gap
# between two reputation exchanges with one panel peer (150-180 s: hypercore.reputation.service) and two
# failover pushes to one buddy (30 s), so the calls a node makes while idle find their connection open.
# An idle connection costs no packets and no wake-ups (no TCP keep-alive probes), only its memory.
KEEPALIVE_S = 240.0
WARM_TIMEOUT_S = 5.0  # a connection opened ahead of a request (Transport.warm) is given up after this
CALLED_KEPT = 4096  # when a call to each node last started, for warm(): pruned to the last KEEPALIVE_S past this


def user_headers(user: User | None) -> dict[str, str]:
    """The headers that carry `user`'s identity to another node (None: the node acts for itself)."""
    if user is None:
        return {}
    return {USER_HEADER: user.name, MANAGEMENT_HEADER: "1" if user.management else "0"}


def route_label(method: str, path: str) -> str:
    """`method` and the route template of `path`: "GET /v1/local/workloads/{id}" (query strings dropped)."""
    parts = path.split("?", 1)[0].split("/")
    out = parts[:1]
    for prev, part in zip(parts, parts[1:]):
        out.append(_VALUE_AFTER[prev] if prev in _VALUE_AFTER and part else part)
    return f"{method} {'/'.join(out)}"


class PeerUnreachable(HypercoreError):
    """No HTTP answer: not a reachable member, connection refused or reset, TLS refused, or no answer in time.

    The message does not repeat the node's name: callers report it next to it.
    """

    def __init__(self, message: str, timed_out: bool = False) -> None:
        self.timed_out = timed_out
        super().__init__(message)


@dataclass(frozen=True)
class PeerResponse:
    status: int
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive when from a peer

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)

    def error(self) -> tuple[str, str]:
        """(code, message) of an error answer."""
        return error_from_body(self.text)

    def error_message(self) -> str:
        return self.error()[1]


class PeerStream:
    """An answer whose body arrives in chunks (Transport.stream): its status, then `async for` the chunks."""

    def __init__(self, status: int, chunks: AsyncIterator[bytes]) -> None:
        self.status = status
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def text(self, limit: int = 64 * 1024) -> str:
        """The start of the body as text, at most `limit` bytes (for an error answer, which is small)."""
        data = bytearray()
        async for chunk in self._chunks:
            data += chunk
            if len(data) >= limit:
                break
        return bytes(data[:limit]).decode("utf-8", "replace")


class Transport:
    def __init__(self, resolve: Callable[[str], Peer | None], ssl_context: ssl.SSLContext | None, *,
                 limit: int = 256, on_request: Callable[[str], None] | None = None) -> None:
        """`on_request(route)` is told of every request sent to a peer (the agent counts them by route)."""
        self._resolve = resolve
        self._on_request = on_request
        self._ssl = ssl_context
        self._scheme = "https" if ssl_context is not None else "http"
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._warming: dict[str, asyncio.Task[None]] = {}  # node -> a connection being opened (see warm)
        self._called: dict[str, float] = {}  # node -> when a call to it last started (monotonic)

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be made inside the running loop.
        if self._session is None or self._session.closed:
            # Idle connections are kept KEEPALIVE_S, shorter than the peer's server keeps them: a request sent
            # on a connection the server is closing would fail as "disconnected", which a forward takes for an
            # unreachable owner (and then places the request itself, asking every node).
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl if self._ssl is not None else False,
                                             keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _count(self, method: str, path: str) -> None:
        if self._on_request is not None:
            self._on_request(route_label(method, path))

    def reachable(self, node: str) -> bool:
        return self._resolve(node) is not None

    def _target(self, node: str) -> tuple[str, dict[str, Any]]:
        """The base URL of member `node`'s API and the request options that verify its name; PeerUnreachable
        when the view does not admit it as a peer."""
        peer = self._resolve(node)
        if peer is None:
            raise PeerUnreachable(f"node {node} is not an alive, admitted member with an API address")
        now = self._called[node] = time.monotonic()
        if len(self._called) > CALLED_KEPT:  # members come and go: forget the calls warm() no longer looks at
            self._called = {n: t for n, t in self._called.items() if now - t < KEEPALIVE_S}
        host = f"[{peer.host}]" if ":" in peer.host else peer.host
        extra: dict[str, Any] = {"server_hostname": node} if self._ssl is not None else {}
        return f"{self._scheme}://{host}:{peer.port}", extra

    def warm(self, node: str) -> None:
        """Start opening a connection to `node` for a request that will follow (no request is sent).

        For a call that must wait for another first: a spawn's attempt on the chosen node waits for the
        claim on the request id's holders, and at 100 nodes both usually open a new mutual-TLS connection
        (about 5 ms each on this loaded 2-core machine). Opened during the claim, the attempt's connection is
        ready when the claim is done. A request to `node` meanwhile waits for it rather than opening a
        second one. A node called within the keep-alive is left alone: its connection is in the pool, or
        busy with a call (in a burst of spawns), and a warm-up would only open one more. A failure costs
        nothing (the request then connects as it would have).
        """
        called = self._called.get(node)
        if node in self._warming or (called is not None and time.monotonic() - called < KEEPALIVE_S - 5.0):
            return
        if self._resolve(node) is None:
            return
        task = asyncio.get_running_loop().create_task(self._connect(node))
        self._warming[node] = task
        task.add_done_callback(lambda done: self._warming.pop(node, None) if self._warming.get(node) is done else None)

    async def _connect(self, node: str) -> None:
        # aiohttp has no public call that opens a pooled connection without a request; its connector's
        # connect() takes the request it would be for, made here as ClientSession makes it (the same pool
        # key: host, port, TLS, server name). tests/identity/test_transport_warm.py checks that the request
        # that follows reuses the connection, so an aiohttp that changes this shows there.
        try:
            base, extra = self._target(node)
            session = self._open()
            request = aiohttp.ClientRequest("GET", URL(base + "/v1/ping"), ssl=True, session=session,
                                            loop=asyncio.get_running_loop(), **extra)
            connection = await session.connector.connect(request, [], aiohttp.ClientTimeout(total=WARM_TIMEOUT_S))  # type: ignore[union-attr]
            connection.release()  # into the pool, idle, for the request that follows
        except Exception as exc:  # noqa: BLE001 - only an optimisation: the request connects by itself
            log.debug("could not open a connection ahead of a request", extra={"node": node, "error": repr(exc)})

    async def _warmed(self, node: str) -> None:
        """Wait for a connection to `node` that warm() is opening, if any."""
        task = self._warming.get(node)
        if task is not None:
            await asyncio.wait({task})  # never raises: a failed or cancelled warm-up leaves the request to connect

    async def request(
        self, node: str, method: str, path: str, *, json_body: Any = None, timeout: float = 10.0,
        user: User | None = None,
    ) -> PeerResponse:
        """Call `path` on member `node`; raises PeerUnreachable when there is no answer."""
        base, extra = self._target(node)
        # The member name is both the TLS server name to verify and the Host the peer expects.
        headers = {"Host": node, **user_headers(user)}
        self._count(method, path)
        await self._warmed(node)
        try:
            async with self._open().request(method, base + path, json=json_body, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=timeout), **extra) as response:
                return PeerResponse(response.status, await response.text(), response.headers)
        except asyncio.TimeoutError:
            raise PeerUnreachable(f"no answer within {timeout:g} s", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(f"{type(exc).__name__}: {exc}") from None

    @contextlib.asynccontextmanager
    async def stream(
        self, node: str, method: str, path: str, *, timeout: float = 10.0, user: User | None = None,
        chunk_size: int = 64 * 1024,
    ) -> AsyncIterator[PeerStream]:
        """Call `path` on member `node` and take its answer's body chunk by chunk, never whole.

        `timeout` bounds connecting and each wait for data, not the whole
        answer. Raises PeerUnreachable (also when the answer breaks off).
        """
        base, extra = self._target(node)
        headers = {"Host": node, **user_headers(user)}
        limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._count(method, path)
        await self._warmed(node)
        try:
            async with self._open().request(method, base + path, headers=headers,
                                            timeout=limits, **extra) as response:
                yield PeerStream(response.status, response.content.iter_chunked(chunk_size))
        except asyncio.TimeoutError:
            raise PeerUnreachable(f"no data within {timeout:g} s", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(f"{type(exc).__name__}: {exc}") from None

    async def gather(
        self, nodes: Iterable[str], method: str, path: str, *, json_body: Any = None, timeout: float = 5.0,
        user: User | None = None,
    ) -> list[tuple[str, PeerResponse | PeerUnreachable]]:
        """The same call to several members at once: [(node, response or the reason there is none)]."""

        async def one(node: str) -> tuple[str, PeerResponse | PeerUnreachable]:
            try:
                return node, await self.request(node, method, path, json_body=json_body, timeout=timeout, user=user)
            except PeerUnreachable as exc:
                return node, exc

        return list(await asyncio.gather(*(one(n) for n in nodes)))

    async def close(self) -> None:
        for task in list(self._warming.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
