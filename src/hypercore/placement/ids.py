"""Names in the placement protocol: request ids, the workload ids derived from them, their owners.

Pure functions, shared by placement and failover (buddies are ranked the same way).
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from hypercore.workload import new_workload_id

# Workload ids of requests that carry a request id are derived from it, so the
# same request yields the same workload id on every node and every retry.
REQUEST_NAMESPACE = uuid.UUID("5f0c2f4e-3a8b-4e53-9a57-2f1f4f8e6b21")


HOME_MARK = "@"  # a request id "<id>@<node>" is placed by that node while it is a member (its home)


def home_of(key: str) -> str | None:
    """The node a (user-scoped) request id names as its home, `…@node`; None when it names none.

    The node a user asks places the request itself when its id names it: `hypercore cluster spawn` makes ids
    so (docs/placement-protocol.md, "Home"). A user who sends the same request to another node sends the same
    id, so that node forwards it to the home and the two meet there, as they meet at a hashed owner.
    """
    request_id = key.rsplit("/", 1)[-1]  # the user part may hold anything; a request id holds no "/"
    _, mark, home = request_id.rpartition(HOME_MARK)
    return home if mark and home else None


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


# Rendezvous (highest-random-weight) hashing: node `n`'s weight for key `k` is mix(seed(n) XOR digest(k)), where
# seed and digest are the first 8 bytes of a SHA-256 and mix is MurmurHash3's 64-bit finalizer (a bijection whose
# every output bit depends on every input bit). The seeds of a node set are hashed once and kept (_members), so
# ranking N nodes for a new key is a few NumPy passes over N integers: 7.3 ms per call at 10,000 nodes with a
# SHA-256 per node and key (the scheme before 2026-11-30), 0.1 ms now (bench/holders.py). A spawn ranks the
# nodes about seven times on its way (docs/scale.md, "Per-spawn costs").
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def _digest64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _SHIFT)
    h *= _M1  # wraps modulo 2**64, as the finalizer means to
    h ^= h >> _SHIFT
    h *= _M2
    h ^= h >> _SHIFT
    return h


class NodeSet:
    """A set of node names ready to be ranked for many keys: the names sorted, and each one's seed, hashed once.
    (`node_set` keeps the last few; a caller that ranks many keys at once may keep its own.)"""

    __slots__ = ("names", "_seeds")

    def __init__(self, nodes: Iterable[str]) -> None:
        self.names = sorted(set(nodes))
        self._seeds = np.fromiter((_digest64(n) for n in self.names), dtype=np.uint64, count=len(self.names))

    def __contains__(self, name: object) -> bool:
        i = bisect.bisect_left(self.names, name) if isinstance(name, str) else len(self.names)
        return i < len(self.names) and self.names[i] == name

    def rank(self, key: str, n: int | None = None) -> list[str]:
        """The names by weight for `key`, highest first; only the first `n` when given."""
        count = len(self.names)
        if count == 0 or n == 0:
            return []
        weights = _mix(self._seeds ^ np.uint64(_digest64(key)))
        if n is not None and n < count:  # the n heaviest and whatever ties the lightest of them
            candidates = np.flatnonzero(weights >= np.partition(weights, count - n)[count - n])
        else:
            candidates = np.arange(count)
        # Heaviest first; equal weights (two names whose seeds agree) by name, as every node must agree.
        order = candidates[np.lexsort((candidates, ~weights[candidates]))]
        return [self.names[i] for i in order[:n]]


@lru_cache(maxsize=16)  # a node's view gives the same list until membership changes; a few lists are in use
def _cached(nodes: tuple[str, ...]) -> NodeSet:
    return NodeSet(nodes)


def node_set(nodes: Iterable[str]) -> NodeSet:
    """`nodes` ready to be ranked; the same NodeSet for the same names in the same order as a recent call."""
    if isinstance(nodes, NodeSet):
        return nodes
    return _cached(nodes if isinstance(nodes, tuple) else tuple(nodes))


def rendezvous_rank(key: str, nodes: Iterable[str], n: int | None = None) -> list[str]:
    """Nodes ordered by highest-random-weight hashing for `key`, best first (only the first `n` when given);
    stable as members come and go: a node's leaving moves only the keys it ranked first for, a node's joining
    takes to it only the keys it now ranks first for.

    Used for request-id owners and for failover buddies (hypercore.failover).
    """
    return node_set(nodes).rank(key, n)


def request_rank(request_id: str, nodes: Iterable[str], n: int | None = None) -> list[str]:
    """Nodes in the order that makes a (user-scoped) request id's owner and holders, best first (for an id
    that names no home: placement.directory.holders_of).

    Ranked by the request's workload id, not by the request id itself: a node
    that knows only a workload id (a user's `stop` or `logs` sent to any node)
    computes the same holders and asks them where it runs, instead of asking
    every node.
    """
    return rendezvous_rank(workload_id_for(request_id), nodes, n)
