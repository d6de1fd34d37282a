"""Node-only routes (`/v1/local/*`): placement attempts, forwarded spawns, this node's workloads.

Only a node of this cluster may call them (its client certificate; see
hypercore.api.auth). When it acts for a user, the user it names is the one
whose workloads are visible: others' answer 404, as on the users' routes.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies made inside the router.

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from hypercore.api import paging
from hypercore.api.auth import Caller, can_see
from hypercore.api.errors import ApiError
from hypercore.api.models import ForwardedSpawnRequest, LocalSpawnRequest
from hypercore.api.user_routes import TailLines, checked_id, log_response, place_for
from hypercore.placement.unreported import QUEUE_DEPTH_HEADER
from hypercore.store import WorkloadRecord

if TYPE_CHECKING:
    from hypercore.node import Node

_RETRACTED = "retracted: the placement attempt timed out and went elsewhere"


def node_router(agent: "Node", node_auth: Callable[[Request], Awaitable[Caller]]) -> APIRouter:
    router = APIRouter(tags=["nodes"])
    NodeCaller = Annotated[Caller, Depends(node_auth)]

    def visible(workload_id: str, caller: Caller) -> WorkloadRecord:
        record = agent.store.get(checked_id(workload_id))
        if record is None or not can_see(caller.user, record.owner):
            raise ApiError(404, "not_found", f"node {agent.name} has no workload {workload_id}")
        return record

    @router.post("/v1/local/spawn")
    async def forwarded_spawn(req: ForwardedSpawnRequest, caller: NodeCaller) -> JSONResponse:
        """A user's spawn, forwarded by the node that received it to this node, the request id's owner."""
        if caller.user is None:
            raise ApiError(400, "invalid_request", "a forwarded spawn must name the user it is for")
        if req.origin_links and req.near == caller.node:  # a node's own measurements, never another's
            agent.links.remember_reported(caller.node, req.origin_links)
        return await place_for(agent, caller.user, req)

    @router.post("/v1/local/workloads", status_code=201)
    async def local_spawn(req: LocalSpawnRequest, caller: NodeCaller, response: Response) -> dict[str, Any]:
        workload = await agent.scheduler.receiver.accept(req)
        # This node's load as it is now, for the placing node's next decisions (hypercore.placement.unreported).
        response.headers[QUEUE_DEPTH_HEADER] = str(agent.manager.queue_depth())
        return workload

    @router.get("/v1/local/reputation")
    async def local_reputation(caller: NodeCaller) -> dict[str, Any]:
        """This node's view of its peers, from its own evidence (hypercore.reputation)."""
        return {"node": agent.name, "view": agent.reputation.view()}

    @router.get("/v1/local/placements/{workload_id}")
    async def local_placement(workload_id: str, caller: NodeCaller) -> dict[str, Any]:
        entry = agent.scheduler.placements.get(checked_id(workload_id))
        if entry is None:
            raise ApiError(404, "not_found", f"node {agent.name} placed no workload {workload_id}")
        return {"id": workload_id, **entry}

    @router.get("/v1/local/workloads")
    async def local_list(caller: NodeCaller, limit: paging.Limit = None, after: paging.After = None) -> dict[str, Any]:
        # Rows that no longer decode are listed too, as state "unknown" with the reason (hypercore.store).
        cursor = paging.parse_cursor(after)
        records, quarantined = agent.store.scan()
        rows, more = paging.page([r.to_dict() for r in [*records, *quarantined] if can_see(caller.user, r.owner)],
                                 limit, cursor)
        return {"workloads": rows, "more": more}

    @router.get("/v1/local/workloads/{workload_id}")
    async def local_get(workload_id: str, caller: NodeCaller) -> dict[str, Any]:
        return visible(workload_id, caller).to_dict()

    @router.delete("/v1/local/workloads/{workload_id}")
    async def local_stop(workload_id: str, caller: NodeCaller, reason: str | None = None) -> dict[str, Any]:
        visible(workload_id, caller)
        # Only the scheduler's own reasons are recorded; free text stays out of the registry.
        record = await agent.manager.stop(workload_id, reason=_RETRACTED if reason == "retracted" else None)
        return record.to_dict()

    @router.post("/v1/local/workloads/{workload_id}/remove")
    async def local_remove(workload_id: str, caller: NodeCaller) -> dict[str, Any]:
        visible(workload_id, caller)
        return {**(await agent.manager.remove(workload_id)).to_dict(), "removed": True}

    @router.get("/v1/local/workloads/{workload_id}/logs")
    async def local_logs(workload_id: str, caller: NodeCaller, tail: TailLines = None) -> StreamingResponse:
        visible(workload_id, caller)
        return log_response(agent.manager.iter_logs(workload_id, tail_lines=tail, max_bytes=agent.max_log_bytes))

    return router
