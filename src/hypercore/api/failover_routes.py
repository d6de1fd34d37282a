"""Node-to-node endpoints of failover (see hypercore.failover); node-only (a cluster node's certificate).

PUT  /v1/local/replicas/{owner}        a buddy's manifest; kept only if newer than the one held,
                                       and only from `owner` itself
GET  /v1/local/replicas/{owner}        the manifest of `owner` held here, and whether this node respawns
GET  /v1/local/failover                this node's failover state (version, buddies, replicas, moves)
GET  /v1/local/failover/moves/{owner}  moves of `owner`'s workloads known here
POST /v1/local/failover/lookup         which of the given workload ids exist here
POST /v1/local/failover/moved          moves of this node's workloads: stop the old copies
POST /v1/local/failover/respawn        a failed node's workload (its manifest entry), placed again by this node,
                                       the owner of its respawn request id (hypercore.failover.respawn); 1 MiB

Bodies up to 16 MiB (hypercore.api.limits): a manifest of thousands of workloads.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies made inside the router.

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from hypercore.api.auth import Caller
from hypercore.api.errors import ApiError
from hypercore.failover import LookupRequest, Manifest, MovesNotice, RespawnRequest

if TYPE_CHECKING:
    from hypercore.node import Node

Owner = Annotated[str, Path(min_length=1, max_length=256)]


def failover_router(agent: "Node", node_auth: Callable[[Request], Awaitable[Caller]]) -> APIRouter:
    router = APIRouter(tags=["failover"])
    NodeCaller = Annotated[Caller, Depends(node_auth)]

    @router.put("/v1/local/replicas/{owner}")
    async def put_replica(manifest: Manifest, owner: Owner, caller: NodeCaller) -> dict[str, Any]:
        if manifest.owner != owner:
            raise ApiError(422, "invalid_request", f"manifest of {manifest.owner!r} sent to the address of {owner!r}")
        if owner == agent.name:
            raise ApiError(409, "own_manifest", f"node {agent.name} does not hold its own manifest")
        if not agent.insecure and caller.node != owner:
            raise ApiError(403, "forbidden", f"node {caller.node} may not send the manifest of {owner}")
        result, held = agent.failover.replicas.put(manifest)
        return {"node": agent.name, "owner": owner, "result": result, "stored_version": held}

    @router.get("/v1/local/replicas/{owner}")
    async def get_replica(owner: Owner, caller: NodeCaller, newer_than: int | None = None) -> dict[str, Any]:
        """The replica held here; with `newer_than`, the manifest only if its version is above that."""
        fo = agent.failover
        held = fo.replicas.get_raw(owner)
        manifest = held[2] if held is not None and (newer_than is None or held[0] > newer_than) else None
        return {
            "node": agent.name,
            "owner": owner,
            "flagged": fo.flagged,
            "acting": fo.is_acting(owner),
            "version": held[0] if held else None,
            "received_at": held[1] if held else None,
            "manifest": manifest,
        }

    @router.get("/v1/local/failover")
    async def failover_status(caller: NodeCaller) -> dict[str, Any]:
        return agent.failover.status()

    @router.get("/v1/local/failover/moves/{owner}")
    async def moves(owner: Owner, caller: NodeCaller) -> dict[str, Any]:
        return {"node": agent.name, "owner": owner,
                "moves": [m.model_dump(mode="json") for m in agent.failover.moves_about(owner)]}

    @router.post("/v1/local/failover/lookup")
    async def lookup(req: LookupRequest, caller: NodeCaller) -> dict[str, Any]:
        return {"node": agent.name, "found": agent.failover.local_lookup(req.ids)}

    @router.post("/v1/local/failover/moved")
    async def moved(req: MovesNotice, caller: NodeCaller) -> dict[str, Any]:
        outcomes = await asyncio.gather(*(agent.failover.apply_move(m) for m in req.moves))
        results = {m.original_id: outcome for m, outcome in zip(req.moves, outcomes)}
        return {"node": agent.name, "results": results}

    @router.post("/v1/local/failover/respawn")
    async def respawn(req: RespawnRequest, caller: NodeCaller) -> dict[str, Any]:
        placement = await agent.failover.place_for(req.owner, req.entry)
        return {"node": placement.node, "workload": placement.workload, "existing": placement.existing}

    return router
