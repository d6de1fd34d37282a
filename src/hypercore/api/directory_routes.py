"""Node-to-node endpoints of the placement directory (hypercore.placement.directory); node-only.

PUT /v1/local/directory          entries a holder writes to the request id's other holders; each is kept only
                                 if the calling node wrote it and holds that request id under this node's view,
                                 and only if what is held here is not newer than the version it replaces
GET /v1/local/directory/{key}    the entry held here for a user-scoped request id (`alice/job-1`), or 404
GET /v1/local/entries/{id}       the entry held here for the request whose workload id is `id`, or 404 (how a
                                 node that knows only a workload id finds where it runs)

Bodies up to 1 MiB (hypercore.api.limits): at most 1,000 entries of at most 16 nodes each.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies made inside the router.

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request

from hypercore.api.auth import Caller
from hypercore.api.errors import ApiError
from hypercore.api.user_routes import checked_id
from hypercore.placement.directory import DirectoryPush
from hypercore.placement.directory_sync import ENTRIES_PATH

if TYPE_CHECKING:
    from hypercore.node import Node


def directory_router(agent: "Node", node_auth: Callable[[Request], Awaitable[Caller]]) -> APIRouter:
    router = APIRouter(tags=["directory"])
    NodeCaller = Annotated[Caller, Depends(node_auth)]

    @router.put("/v1/local/directory")
    async def put_entries(push: DirectoryPush, caller: NodeCaller) -> dict[str, Any]:
        # --insecure has no certificates to tell nodes apart: every caller is "(insecure peer)".
        results = agent.directory.accept(caller.node, push.writes, check_caller=not agent.insecure)
        return {"node": agent.name, "results": results}

    @router.get("/v1/local/directory/{key:path}")
    async def get_entry(key: str, caller: NodeCaller) -> dict[str, Any]:
        entry = agent.directory.store.get(key)
        if entry is None:
            raise ApiError(404, "not_found", f"node {agent.name} holds no directory entry for {key[:200]!r}")
        return entry.model_dump(mode="json")

    @router.get(ENTRIES_PATH + "/{workload_id}")
    async def get_entry_of_workload(workload_id: str, caller: NodeCaller) -> dict[str, Any]:
        entry = agent.directory.store.by_workload(checked_id(workload_id))
        if entry is None:
            raise ApiError(404, "not_found", f"node {agent.name} holds no directory entry for workload {workload_id}")
        return entry.model_dump(mode="json")

    return router
