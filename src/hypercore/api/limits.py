"""Request body limits, enforced while the body streams in (chunked or not).

A declared Content-Length over the limit gets 413 before anything is read; a
body without one (chunked) is counted as it arrives and cut off with 413 as
soon as it passes the limit, so no request can make the agent buffer more
than the limit. Failover's manifest routes get a larger limit than the rest.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from hypercore.api.errors import error_response

MAX_BODY_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Manifests, and lookups and moves of a manifest's workloads; a respawn (one manifest entry) is not one of them.
_LARGE_PREFIXES = ("/v1/local/replicas/", "/v1/local/failover/lookup", "/v1/local/failover/moved")


def limit_for(path: str) -> int:
    return MAX_MANIFEST_BYTES if path.startswith(_LARGE_PREFIXES) else MAX_BODY_BYTES


class _TooLarge(StarletteHTTPException):
    """Raised from inside the body read: an HTTPException, so FastAPI's body parsing lets it through as a 413
    (any other exception there becomes a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope.get("path", ""))
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(limit)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> Any:
    return error_response(413, "too_large", f"request body over {limit} bytes")
