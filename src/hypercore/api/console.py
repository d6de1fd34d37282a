"""The web console: static files at /ui/, and the two reads only it needs: recent decisions, coordinates.

The console is plain HTML, CSS and ES modules (hypercore/api/ui/), served by
every agent on its own API address, so it has the same TLS and the same
tokens as the API: the user pastes a token, the page keeps it in
sessionStorage and sends it as a Bearer header on its calls to the JSON API.
Nothing is loaded from elsewhere, and the files are served with a strict
Content-Security-Policy (no inline script or style, no other origin, no
framing). The page inserts every string from the API as text, never as HTML.

Routes:
- GET /v1/decisions (user token): the placements this node decided recently
  (Scheduler.decisions, the last 50), newest first, as far as the caller may
  see them (their own; everyone's for a management token). `?cluster=true`
  asks every reachable node instead (each answers through the node-only
  GET /v1/local/decisions, for the same user), since a spawn is decided by its
  request id's owner, which need not be the node the console is open on.
- GET /v1/coordinates (public, like GET /v1/nodes): the round trips between
  members that Serf's network coordinates estimate (Node.coordinates, which
  the agent refreshes from Serf), for the Nodes map; at most MAP_NODES
  members. Nothing is measured for it: it reads what this node already has.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies made inside the router.

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hypercore.api.auth import Caller, can_see
from hypercore.api.errors import error_response
from hypercore.api.ratelimit import FanOutLimiter
from hypercore.identity.tokens import User

if TYPE_CHECKING:
    from hypercore.node import Node

UI_DIR = Path(__file__).with_name("ui")
MAP_NODES = 100  # the coordinate answer is members squared: the map lays out larger clusters on a circle
CONTENT_SECURITY_POLICY = ("default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
                           "form-action 'self'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidate: an upgraded agent serves its new console at once
)


class SecuredFiles:
    """An ASGI app that adds SECURITY_HEADERS to every answer of the app it wraps (errors and redirects too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, secured)
        except StarletteHTTPException as exc:  # a missing file: answered here, so that it is secured too
            response = error_response(exc.status_code, "not_found" if exc.status_code == 404 else "http_error",
                                      str(exc.detail))
            response.headers.update(exc.headers or {})
            await response(scope, receive, secured)


def visible_decisions(agent: "Node", user: User | None) -> list[dict[str, Any]]:
    """This node's recent decisions that `user` may see (None: a node acting for itself), newest first."""
    return [d for d in reversed(agent.scheduler.decisions) if can_see(user, d.get("owner"))]


def install_console(app: FastAPI, agent: "Node", user_auth: Callable[[Request], Awaitable[User]],
                    node_auth: Callable[[Request], Awaitable[Caller]], fanouts: FanOutLimiter) -> None:
    """Add the console's routes and mount its files at /ui/ on `app`."""
    router = APIRouter(tags=["console"])
    CurrentUser = Annotated[User, Depends(user_auth)]
    NodeCaller = Annotated[Caller, Depends(node_auth)]

    @router.get("/v1/decisions")
    async def decisions(user: CurrentUser, cluster: Annotated[bool, Query(
            description="Ask every reachable node, not only this one.")] = False) -> dict[str, Any]:
        if not cluster:
            return {"decisions": visible_decisions(agent, user), "unreachable": {}}
        fanouts.check(user.name)
        found: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        for node, result in await agent.scheduler.gather("/v1/local/decisions", user=user):
            if isinstance(result, Exception):
                errors[node] = str(result)
            else:
                found.extend(d for d in result.get("decisions", []) if isinstance(d, dict))
        found.sort(key=lambda d: d.get("time") or 0, reverse=True)
        return {"decisions": found, "unreachable": errors}

    @router.get("/v1/coordinates")
    async def coordinates() -> dict[str, Any]:
        book = agent.coordinates
        names = sorted({n.name for n in agent.view.nodes()} | {agent.name})
        known = [n for n in names if n in book]
        if len(known) > MAP_NODES:
            return {"node": agent.name, "nodes": [], "rtt_ms": {}, "truncated": True}
        rtt = {a: {b: round(book.rtt_ms(a, b) or 0.0, 3) for b in known if b != a} for a in known}
        return {"node": agent.name, "nodes": known, "rtt_ms": rtt, "truncated": False}

    @router.get("/v1/local/decisions")
    async def local_decisions(caller: NodeCaller) -> dict[str, Any]:
        return {"decisions": visible_decisions(agent, caller.user)}

    app.include_router(router)
    app.mount("/ui", SecuredFiles(StaticFiles(directory=UI_DIR, html=True)), name="ui")
