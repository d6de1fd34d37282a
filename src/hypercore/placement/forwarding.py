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
from typing import Any

from hypercore.errors import HypercoreError
from hypercore.identity.tokens import User
from hypercore.placement.ids import user_request_id
from hypercore.placement.scheduler import Scheduler
from hypercore.transport import PeerUnreachable, Transport

log = logging.getLogger("hypercore.scheduler")
FORWARD_TIMEOUT_S = 110.0  # under the CLI's 120 s, over any sane placement
FORWARD_PATH = "/v1/local/spawn"


class OwnerTimeout(HypercoreError):
    """The owner of a request id did not answer in time; it may still be placing the request."""


class OwnerGarbled(HypercoreError):
    """The owner answered something that is not JSON."""


@dataclass(frozen=True)
class Forwarded:
    status: int
    body: Any


async def forward_to_owner(scheduler: Scheduler, transport: Transport, user: User, request_id: str,
                           body: dict[str, Any]) -> Forwarded | None:
    """The placing node's answer to `body` (a spawn request), or None when this node should place it itself."""
    placers = scheduler.holders_of(user_request_id(user.name, request_id))  # the owner first
    for placer in placers:
        if placer == scheduler.node_name:
            return None
        try:
            r = await transport.request(placer, "POST", FORWARD_PATH, json_body=body, timeout=FORWARD_TIMEOUT_S,
                                        user=user)
        except PeerUnreachable as exc:
            if exc.timed_out:
                raise OwnerTimeout(f"node {placer}, which places request {request_id!r}, did not answer in "
                                   f"{FORWARD_TIMEOUT_S:g} s; retry with the same request id") from None
            log.warning("request id holder unreachable; trying the next", extra={"holder": placer,
                                                                                  "error": str(exc)})
            continue
        try:
            return Forwarded(r.status, r.json())
        except ValueError:
            raise OwnerGarbled(f"node {placer} answered with something that is not JSON") from None
    log.warning("no holder of the request id reachable; placing here", extra={"holders": placers})
    return None
