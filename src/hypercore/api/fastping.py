"""`GET /v1/ping` answered before the middleware stack and the router.

Probes between nodes were once this route, about one a second per node, and
through FastAPI's stack and router an answer cost several times the work of
the answer itself. They are UDP datagrams now (hypercore.beacon.echo); the
route stays for health checks, and still costs next to nothing. The ping is
public and says only the node's name, so the
one check that matters is the Host header's (DNS rebinding): a ping to a host
name not in the allowed set exactly goes the long way, where
TrustedHostMiddleware answers it as it answers everything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

PING_PATH = "/v1/ping"


class FastPing:
    """Pure ASGI middleware (see the module docstring)."""

    def __init__(self, app: Any, node: str, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        hosts = list(allowed_hosts)
        self._any_host = "*" in hosts
        self._hosts = {h.lower().encode() for h in hosts if "*" not in h}
        body = json.dumps({"node": node}).encode()
        self._start = {"type": "http.response.start", "status": 200,
                       "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
        self._body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == PING_PATH and scope["method"] == "GET" and self._host_ok(scope):
            await send(self._start)
            await send(self._body)
            return
        await self.app(scope, receive, send)

    def _host_ok(self, scope: Any) -> bool:
        if self._any_host:
            return True
        for name, value in scope["headers"]:
            if name == b"host":
                host = value[1:value.index(b"]")] if value.startswith(b"[") and b"]" in value else value.split(b":")[0]
                return host.lower() in self._hosts
        return False
