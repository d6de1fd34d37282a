"""Who is calling: a user (a bearer token signed by the cluster CA) or a node (its client certificate).

Users' routes need a token, on every address, loopback included. Node-only
routes (`/v1/local/*`) need a client certificate issued by the cluster CA,
verified in the TLS handshake (hypercore.api.server puts the name it
certifies into the request scope); a user token there gets 403. A node that
acts for a user says which user in two headers (hypercore.transport), and
only a node-only route reads them — so they mean something only when a node
of this cluster vouches for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from hypercore.api.errors import ApiError
from hypercore.identity.tokens import USER_NAME_RE, TokenInvalid, TokenVerifier, User
from hypercore.transport import MANAGEMENT_HEADER, USER_HEADER

PEER_NODE = "hypercore.peer_node"  # ASGI scope extension: the node name a verified client certificate names


def peer_node(request: Request) -> str | None:
    return (request.scope.get("extensions") or {}).get(PEER_NODE)


@dataclass(frozen=True)
class Caller:
    """A node-only route's caller: the node, and the user it acts for (None: the node acts for itself)."""

    node: str
    user: User | None


def can_see(user: User | None, owner: str | None) -> bool:
    """Whether `user` may see and act on a workload created by `owner` (None: a node acting for itself)."""
    return user is None or user.management or owner == user.name


def make_dependencies(
    verifier: TokenVerifier | None, *, insecure: bool
) -> tuple[Callable[[Request], Awaitable[User]], Callable[[Request], Awaitable[Caller]]]:
    """FastAPI dependencies (user_auth, node_auth). async: a sync one costs a threadpool hop per call."""

    async def user_auth(request: Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "this route needs a user token: send 'Authorization: Bearer <token>' "
                           "(make one with `hypercore token create`; the CLI reads --token or HYPERCORE_TOKEN)")
        if verifier is None:
            raise ApiError(401, "unauthorized", "this node has no --ca-file to verify tokens with")
        try:
            return verifier.verify(token.strip())
        except TokenInvalid as exc:
            raise ApiError(401, "unauthorized", f"token refused: {exc}") from None

    async def node_auth(request: Request) -> Caller:
        node = peer_node(request)
        if node is None and not insecure:
            raise ApiError(403, "forbidden", "node-only route: only a node of this cluster, presenting its certificate "
                           "(mutual TLS), may call it; users call /v1/workloads")
        return Caller(node or "(insecure peer)", _vouched_user(request))

    return user_auth, node_auth


def _vouched_user(request: Request) -> User | None:
    name = request.headers.get(USER_HEADER)
    if name is None:
        return None
    if not USER_NAME_RE.fullmatch(name):
        raise ApiError(400, "invalid_request", f"{USER_HEADER} {name[:80]!r} is not a user name")
    return User(name, management=request.headers.get(MANAGEMENT_HEADER) == "1")


def require_management(user: User) -> None:
    if not user.management:
        raise ApiError(403, "forbidden", f"user {user.name!r}: this needs a management token "
                       "(hypercore token create --management)")


