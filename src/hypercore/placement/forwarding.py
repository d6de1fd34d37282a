"""Owner forwarding: a request with a request id is placed by that id's owner node.

So that the same request sent to two nodes at once still yields one
workload, the node that receives it hands it to the owner (rendezvous
hashing over the reachable nodes) with the user it verified, and relays the
answer. If the owner cannot be reached at all, the next of the request id's
holders places it: it keeps the request's directory entry too, so a copy is
still found by reading one entry and asking the node it names, not by
asking every node. Only when no holder can be reached does the receiving
node place it itself. A node that does not answer in time may still be
placing it, so the caller is told to retry with the same request id instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Any

from hypercore.errors import HypercoreError
from hypercore.identity.tokens import User
from hypercore.placement.ids import user_request_id
from hypercore.placement.scheduler import Scheduler
from hypercore.transport import PeerResponse, PeerUnreachable, Transport

log = logging.getLogger("hypercore.scheduler")
FORWARD_TIMEOUT_S = 110.0  # under the CLI's 120 s, over any sane placement
FORWARD_PATH = "/v1/local/spawn"


class OwnerTimeout(HypercoreError):
    """A node that places a request id (its owner, or the next holder) did not answer in time; it may still be
    placing the request."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


class OwnerGarbled(HypercoreError):
    """The owner answered something that is not JSON."""


@dataclass(frozen=True)
class Forwarded:
    status: int
    body: Any


async def first_placer(holders: list[str], me: str, send: Callable[[str], Awaitable[PeerResponse]],
                       ) -> tuple[str, PeerResponse | None] | None:
    """Who places a request id, and its answer to `send(node)`: the first of its `holders` (owner first) that
    is this node `me` (no answer: place here) or that answers; one that refuses connections is passed over,
    since the next holder keeps the request's directory entry too. None when none answered. Raises
    OwnerTimeout for a holder that did not answer in time: it may still be placing it, so no other may."""
    for holder in holders:
        if holder == me:
            return holder, None
        try:
            return holder, await send(holder)
        except PeerUnreachable as exc:
            if exc.timed_out:
                raise OwnerTimeout(f"node {holder}, which places it, did not answer: {exc}", holder) from None
            log.warning("request id holder unreachable; trying the next", extra={"holder": holder, "error": str(exc)})
    return None


async def forward_to_owner(scheduler: Scheduler, transport: Transport, user: User, request_id: str,
                           body: dict[str, Any]) -> Forwarded | None:
    """The placing node's answer to `body` (a spawn request), or None when this node should place it itself."""
    holders = scheduler.holders_of(user_request_id(user.name, request_id))
    try:
        found = await first_placer(holders, scheduler.node_name, lambda node: transport.request(
            node, "POST", FORWARD_PATH, json_body=body, timeout=FORWARD_TIMEOUT_S, user=user))
    except OwnerTimeout as exc:
        raise OwnerTimeout(f"node {exc.node}, which places request {request_id!r}, did not answer in "
                           f"{FORWARD_TIMEOUT_S:g} s; retry with the same request id", exc.node) from None
    if found is None:
        log.warning("no holder of the request id reachable; placing here", extra={"holders": holders})
        return None
    placer, r = found
    if r is None:
        return None
    try:
        return Forwarded(r.status, r.json())
    except ValueError:
        raise OwnerGarbled(f"node {placer} answered with something that is not JSON") from None
