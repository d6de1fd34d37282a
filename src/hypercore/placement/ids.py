"""Names in the placement protocol: request ids, the workload ids derived from them, their owners.

Pure functions, shared by placement and failover (buddies are ranked the same way).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

from hypercore.workload import new_workload_id

# Workload ids of requests that carry a request id are derived from it, so the
# same request yields the same workload id on every node and every retry.
REQUEST_NAMESPACE = uuid.UUID("5f0c2f4e-3a8b-4e53-9a57-2f1f4f8e6b21")


def user_request_id(user: str, request_id: str) -> str:
    """A user's request id as the cluster keys it: two users' "job-1" are two requests, not one."""
    return f"{user}/{request_id}"


def workload_id_for(request_id: str | None) -> str:
    """The workload id a request gets: derived from its request id, else fresh."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, request_id)) if request_id else new_workload_id()


def derived_from_request(workload_id: str) -> bool:
    """Whether `workload_id` may come from a request id (a version-5 UUID); a spawn without one gets a random id."""
    try:
        return uuid.UUID(workload_id).version == 5
    except ValueError:
        return False


def rendezvous_rank(key: str, nodes: Iterable[str]) -> list[str]:
    """Nodes ordered by highest-random-weight hashing for `key`, best first; stable as members come and go.

    Used for request-id owners and for failover buddies (hypercore.failover).
    """
    return sorted(set(nodes), key=lambda n: hashlib.sha256(f"{key}\0{n}".encode()).digest(), reverse=True)


def request_rank(request_id: str, nodes: Iterable[str]) -> list[str]:
    """Nodes in the order that makes a (user-scoped) request id's owner and holders, best first.

    Ranked by the request's workload id, not by the request id itself: a node
    that knows only a workload id (a user's `stop` or `logs` sent to any node)
    computes the same holders and asks them where it runs, instead of asking
    every node.
    """
    return rendezvous_rank(workload_id_for(request_id), nodes)
