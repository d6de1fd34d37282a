"""Node-to-node endpoints of failover (see hypercore.failover); all need the cluster token.

PUT  /v1/local/replicas/{owner}        a buddy's manifest; kept only if newer than the one held
GET  /v1/local/replicas/{owner}        the manifest of `owner` held here, and whether this node respawns
GET  /v1/local/failover                this node's failover state (version, buddies, replicas, moves)
GET  /v1/local/failover/moves/{owner}  moves of `owner`'s workloads known here
POST /v1/local/failover/lookup         which of the given workload ids exist here
POST /v1/local/failover/moved          moves of this node's workloads: stop the old copies
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from hypercore.api.app import ApiError
from hypercore.failover import MAX_BODY, LookupRequest, Manifest, MovesNotice

if TYPE_CHECKING:
    from hypercore.agent import NodeAgent

Owner = Annotated[str, Path(min_length=1, max_length=256)]


async def _bounded(request: Request) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, "too_large", f"request body over {MAX_BODY // (1024 * 1024)} MiB")


def failover_router(agent: NodeAgent, require_token: Any) -> APIRouter:
    """The routes, guarded by the app's own token check (`require_token`, a FastAPI dependency)."""
    router = APIRouter(dependencies=[Depends(require_token), Depends(_bounded)], tags=["failover"])

    @router.put("/v1/local/replicas/{owner}")
    async def put_replica(manifest: Manifest, owner: Owner) -> dict[str, Any]:
        if manifest.owner != owner:
            raise ApiError(422, "invalid_request", f"manifest of {manifest.owner!r} sent to the address of {owner!r}")
        if owner == agent.name:
            raise ApiError(409, "own_manifest", f"node {agent.name} does not hold its own manifest")
        result, held = agent.failover.replicas.put(manifest)
        return {"node": agent.name, "owner": owner, "result": result, "stored_version": held}

    @router.get("/v1/local/replicas/{owner}")
    async def get_replica(owner: Owner, newer_than: int | None = None) -> dict[str, Any]:
        """The replica held here; with `newer_than`, the manifest only if its version is above that."""
        fo = agent.failover
        held = fo.replicas.get_raw(owner)
        if held is not None and newer_than is not None and held[0] <= newer_than:
            held = (held[0], held[1], None)  # type: ignore[assignment]
        return {
            "node": agent.name,
            "owner": owner,
            "flagged": fo.flagged,
            "acting": owner in fo._acting,
            "version": held[0] if held else None,
            "received_at": held[1] if held else None,
            "manifest": held[2] if held else None,
        }

    @router.get("/v1/local/failover")
    async def failover_status() -> dict[str, Any]:
        return agent.failover.status()

    @router.get("/v1/local/failover/moves/{owner}")
    async def moves(owner: Owner) -> dict[str, Any]:
        return {"node": agent.name, "owner": owner,
                "moves": [m.model_dump(mode="json") for m in agent.failover.moves_about(owner)]}

    @router.post("/v1/local/failover/lookup")
    async def lookup(req: LookupRequest) -> dict[str, Any]:
        return {"node": agent.name, "found": agent.failover.local_lookup(req.ids)}

    @router.post("/v1/local/failover/moved")
    async def moved(req: MovesNotice) -> dict[str, Any]:
        outcomes = await asyncio.gather(*(agent.failover.apply_move(m) for m in req.moves))
        results = {m.original_id: outcome for m, outcome in zip(req.moves, outcomes)}
        return {"node": agent.name, "results": results}

    return router
