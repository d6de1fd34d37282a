"""Node failover: what a failed node ran is placed again, once, and its old copies go away.

Three parts (docs/cluster.md, "Failover", says the same for users):

Replication. Every node keeps k=2 *buddies* — the alive nodes ranked highest
by rendezvous hashing for its name (placement.ids.rendezvous_rank), nodes
that carry the flag first (Serf tag `fo=1`) — supplied with its *manifest*:
the workloads it accepted that are pending or running (id, spec, policy,
request id, state), plus the moves it knows of (see below). The manifest carries a version that only grows (persisted, and at
least the wall clock in ms); it is pushed when it changes (at most every
0.5 s per buddy) and every 10 s anyway. A buddy keeps the newest version per
owner in `<data_dir>/replicas.sqlite3` and ignores older ones. A node thus
sends k pushes and holds about k manifests, whatever the size of the cluster.

Respawn (`--respawn-on-node-failure`). When Serf marks an owner `failed`, each
flagged node that holds its manifest ranks the alive nodes by the same hash
for the owner's name and asks the ones ranked above it (and the top k+2) for
their copy. The highest-ranked flagged holder is the *respawner*: it acts at
once. Every other flagged holder waits a grace period (10 s), then checks by
fan-out which workloads were placed again and places only the missing ones
(and not while the respawner says it is still placing). Placing means
`scheduler.place(spec, original policy, request_id="respawn:<original id>")`
on that request id's owner (`POST /v1/local/failover/respawn`; an owner that
cannot be reached is asked again next round), so the new copy's id is fixed
by the old id, every holder's placement of the same workload meets at one
node and its placement directory, and a second placement yields the same
workload. Each placement is recorded as a *move* (owner, original id → new id, node) in replicas.sqlite3, which goes into this
node's own manifest, so that its buddies know it too.

Return. A node that comes back stops its old copies of moved workloads and
marks them STOPPED with "moved to <node> as <new id> while this node was
failed". It learns of moves three ways: at start-up it asks the nodes ranked
highest for its name (its buddies) for moves and looks up, on every alive node,
the respawn id of each workload it still runs; when it sees peers come back
from `failed` (a healed partition looks like that from the inside) it asks its
buddies again; and every node holding an undelivered move pushes it to the
owner as soon as the owner is alive again, until the owner acknowledges it.
Workloads stopped on purpose are not in any manifest, so they never come back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hypercore.failover.context import Context, Handles
from hypercore.failover.model import (
    FLAG_TAG,
    GRACE,
    K,
    TICK,
    WATCH_COALESCE,
    WATCH_TICK,
    LookupRequest,
    Manifest,
    ManifestEntry,
    Move,
    MovesNotice,
    RespawnRequest,
    buddies_of,
    holder_rank,
    moved_reason,
    respawn_id,
    respawn_request_id,
)
from hypercore.failover.replication import Replicator
from hypercore.failover.respawn import Respawner
from hypercore.failover.returning import Returner
from hypercore.failover.store import ReplicaStore
from hypercore.loops import reactive
from hypercore.placement.ids import rendezvous_rank
from hypercore.placement.model import Placement
from hypercore.workload import WorkloadState

__all__ = [
    "FLAG_TAG",
    "Failover",
    "Handles",
    "LookupRequest",
    "Manifest",
    "ManifestEntry",
    "Move",
    "RespawnRequest",
    "MovesNotice",
    "ReplicaStore",
    "buddies_of",
    "holder_rank",
    "moved_reason",
    "rendezvous_rank",
    "respawn_id",
    "respawn_request_id",
]

log = logging.getLogger("hypercore.failover")


class Failover:
    """Replication, respawn and return, for one node (see the module docstring)."""

    def __init__(self, handles: Handles, k: int = K, grace: float = GRACE) -> None:
        self.ctx = Context(handles, k=k, grace=grace)
        self.replication = Replicator(self.ctx)
        self.respawn = Respawner(self.ctx, on_peers_back=self._peers_back)
        self.returning = Returner(self.ctx, lookup=self.respawn.lookup)

    @property
    def name(self) -> str:
        return self.ctx.name

    @property
    def flagged(self) -> bool:
        return self.ctx.flagged

    @property
    def replicas(self) -> ReplicaStore:
        return self.ctx.replicas

    async def run(self) -> None:
        """The node's failover loops; runs until cancelled."""
        await asyncio.gather(
            reactive(self.ctx.replication_wakeup, self.replication.tick, longest=TICK,
                     what="failover replication tick", log=log),
            reactive(self.ctx.watch_wakeup, self.respawn.tick, longest=WATCH_TICK, shortest=WATCH_COALESCE,
                     what="failover watch tick", log=log),
            self.returning.startup_check(),
        )

    async def close(self) -> None:
        await self.ctx.tasks.close()
        self.replication.close()
        self.ctx.replicas.close()

    async def _peers_back(self, reason: str) -> None:
        await self.returning.check_moved(reason, fan_out=False)

    # -- what the node-only routes (hypercore.api.failover_routes) ask --------------

    def is_acting(self, owner: str) -> bool:
        """Whether this node is placing `owner`'s workloads right now."""
        return owner in self.ctx.acting

    async def place_for(self, owner: str, entry: ManifestEntry) -> Placement:
        """Failed `owner`'s workload, sent by a holder of its manifest to this node, its respawn request id's owner."""
        return await self.respawn.place_for(owner, entry)

    def local_lookup(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.respawn.local_lookup(ids)

    async def apply_move(self, move: Move) -> str:
        return await self.returning.apply_move(move)

    def moves_about(self, owner: str) -> list[Move]:
        return self.returning.moves_about(owner)

    def status(self) -> dict[str, Any]:
        ctx = self.ctx
        manifest = self.replication.manifest
        moved_away = [r.to_dict() for r in ctx.h.workloads.list(states=(WorkloadState.STOPPED,))
                      if (r.error or "").startswith("moved to ")]
        return {
            "node": ctx.name,
            "flagged": ctx.flagged,
            "version": manifest.version if manifest else None,
            "workloads": len(manifest.workloads) if manifest else None,
            "buddies": {b: {"acked": s.acked} for b, s in self.replication.buddies.items()},
            "replicas": {o: {"version": v, "received_at": t} for o, v, t in ctx.replicas.owners()},
            "respawning": sorted(ctx.acting),
            "moves": [m.model_dump(mode="json") for m in ctx.replicas.moves()],
            "moved_away": moved_away,
        }
