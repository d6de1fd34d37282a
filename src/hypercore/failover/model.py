"""Failover's pure parts: constants, who holds whose manifest, and the messages nodes exchange."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from hypercore.placement.ids import rendezvous_rank, workload_id_for
from hypercore.workload import OWNER_PATTERN, WORKLOAD_ID_PATTERN, WorkloadSpec

REPLICAS_FILENAME: Final = "replicas.sqlite3"
FLAG_TAG: Final = "fo"  # Serf tag "fo=1": this node carries --respawn-on-node-failure
K: Final = 2  # buddies per node
# The loops run when what they read changes (hypercore.loops.reactive); these are their longest sleeps.
TICK: Final = 10.0  # replication loop (writes the store did not announce are seen by then)
WATCH_TICK: Final = 5.0  # membership watch loop
WATCH_COALESCE: Final = 0.05  # member events of one burst (a partition heals) make one watch tick
PUSH_MIN_INTERVAL: Final = 0.5  # per buddy, between two pushes
COALESCE_S: Final = 0.2  # a change waits this long for the next (a spawn's pending, then running) before a push
REFRESH_INTERVAL: Final = 30.0  # a buddy hears from its owner at least this often (and on every change)
PUSH_RETRY: Final = 2.0  # after a failed push
ASK_TIMEOUT: Final = 3.0
GRACE: Final = 10.0  # how long a holder that is not the respawner waits before it checks
MAX_DEFER: Final = 60.0  # how long it defers to a respawner that says it is still placing
REPLICA_TTL: Final = 180.0  # a replica of an owner that is not failed and stopped pushing is dropped after
MOVE_KEEP_DELIVERED: Final = 3600.0
MOVE_KEEP_UNDELIVERED: Final = 7 * 86400.0
DELIVERY_RETRY: Final = 5.0
CHECK_DEBOUNCE: Final = 10.0
RESPAWN_CONCURRENCY: Final = 16


NodeName = Annotated[str, Field(min_length=1, max_length=256)]
WorkloadId = Annotated[str, Field(pattern=WORKLOAD_ID_PATTERN)]


def holder_rank(owner: str, alive: Iterable[str], flagged: Iterable[str] = (), n: int | None = None) -> list[str]:
    """The alive nodes other than `owner` in the order they hold its manifest (the first `n` when given).

    Rendezvous order, with nodes that carry --respawn-on-node-failure first:
    a node's buddies are the nodes that can respawn its workloads whenever
    there are enough of them. When every node (or none) carries the flag, this
    is the plain rendezvous order.
    """
    nodes = tuple(alive)
    flags = set(flagged).intersection(nodes)
    flags.discard(owner)
    if n is not None and (not flags or len(flags) == len(set(nodes) - {owner})):
        return [x for x in rendezvous_rank(owner, nodes, n + 1) if x != owner][:n]  # plain order: its first n only
    ranked = [x for x in rendezvous_rank(owner, nodes) if x != owner]
    ordered = [x for x in ranked if x in flags] + [x for x in ranked if x not in flags]
    return ordered if n is None else ordered[:n]


def buddies_of(owner: str, alive: Iterable[str], k: int = K, flagged: Iterable[str] = ()) -> list[str]:
    """The k nodes that hold `owner`'s manifest, among the alive nodes."""
    return holder_rank(owner, alive, flagged, k)


def respawn_request_id(original_id: str) -> str:
    return f"respawn:{original_id}"


def respawn_id(original_id: str) -> str:
    """The workload id a respawn of `original_id` gets, wherever it is placed."""
    return workload_id_for(respawn_request_id(original_id))


def moved_reason(node: str | None, new_id: str) -> str:
    return f"moved to {node or 'another node'} as {new_id} while this node was failed"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: WorkloadId
    spec: WorkloadSpec
    policy: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, max_length=256)
    state: Literal["pending", "running"]
    owner: str | None = Field(default=None, pattern=OWNER_PATTERN)  # the user it runs for


class RespawnRequest(BaseModel):
    """A failed node's workload, sent by a holder of its manifest to its respawn request id's owner."""

    model_config = ConfigDict(extra="forbid")

    owner: NodeName  # the failed node
    entry: ManifestEntry


class Move(BaseModel):
    """A workload of `owner` placed again while `owner` was failed."""

    model_config = ConfigDict(extra="forbid")

    owner: NodeName
    original_id: WorkloadId
    new_id: WorkloadId
    node: str | None = Field(default=None, max_length=256)  # where the new copy went
    moved_at: float
    by: NodeName  # the node that placed it (or learned of it)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: NodeName
    version: int = Field(ge=0)
    generated_at: float
    workloads: list[ManifestEntry] = Field(default_factory=list, max_length=100_000)
    moves: list[Move] = Field(default_factory=list, max_length=100_000)


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[WorkloadId] = Field(max_length=100_000)


class MovesNotice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    moves: list[Move] = Field(max_length=100_000)


