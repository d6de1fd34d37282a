"""Users' routes: spawn, list, stop, remove, read logs; each needs a user token.

A user sees and acts on the workloads their token created; a management
token on all. Workloads held by other nodes are reached over the node
transport, which carries the user's verified identity (never the token).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies made inside the router.

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from hypercore.api import paging
from hypercore.api.auth import can_see, require_management
from hypercore.api.errors import ApiError
from hypercore.api.models import PlacementRequest, SpawnRequest
from hypercore.api.ratelimit import FanOutLimiter, SpawnLimiter
from hypercore.identity.tokens import User
from hypercore.policy import Policy, loads_policy, parse_policy
from hypercore.placement import forward_to_owner, user_request_id
from hypercore.placement.directory_sync import LOOKUP_TIMEOUT
from hypercore.placement.model import ANSWER_TOP_K
from hypercore.transport import PeerResponse, PeerStream, PeerUnreachable
from hypercore.workload import is_workload_id

if TYPE_CHECKING:
    from hypercore.node import Node

log = logging.getLogger("hypercore.api")

# `?tail=N`: the last N lines of a log (the answer stays capped at the node's --max-log-mb).
TailLines = Annotated[int | None, Query(ge=0, le=1_000_000_000, description="Only the last N lines.")]

FANOUT_FREE_NODES = 10  # a list asking at most this many named nodes is not a request that asks every node
NAMED_ASKED = 3  # of the nodes a directory entry names (where it went, where attempts went), asked in turn


def log_response(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    """A log, streamed as it is read (hypercore.runtime.logs): never whole in memory."""
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")


async def _relayed(upstream: PeerStream, stack: AsyncExitStack, max_bytes: int, node: str) -> AsyncIterator[bytes]:
    """Another node's log answer, passed on chunk by chunk (and capped here too); the call ends with it."""
    sent = 0
    try:
        async for chunk in upstream:
            chunk = chunk[: max_bytes - sent]
            sent += len(chunk)
            if chunk:
                yield chunk
            if sent >= max_bytes:
                break
    except Exception as exc:
        # Breaking the answer off (not ending it) tells the client it is incomplete.
        log.warning("relaying a log broke off", extra={"node": node, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        await stack.aclose()


def policy_from(body: dict[str, Any] | None) -> Policy | None:
    return None if body is None else parse_policy(body, source="request policy", default_name="inline")


def checked_id(workload_id: str) -> str:
    if not is_workload_id(workload_id):
        raise ApiError(404, "not_found", f"{workload_id!r} is not a workload id (ids are UUIDs)")
    return workload_id


def relay(response: PeerResponse, node: str) -> Any:
    """The JSON of another node's answer, its errors kept (a 5xx there is a 502 here)."""
    if response.status != 200:
        code, message = response.error()
        raise ApiError(response.status if response.status < 500 else 502, code, message)
    try:
        return response.json()
    except ValueError:
        raise ApiError(502, "upstream", f"node {node} answered with something that is not JSON") from None


async def place_for(agent: "Node", user: User, req: SpawnRequest) -> JSONResponse:
    """Place `req` from this node for `user` (this node owns the request id, or it is a dry run)."""
    request_id = user_request_id(user.name, req.request_id) if req.request_id else None
    placement = await agent.scheduler.place(req.spec, policy_from(req.policy), request_id=request_id,
                                            dry_run=req.dry_run, owner=user.name, near=checked_near(agent, req.near))
    # Top of the ranking plus counts (ranked_more, rejected_more): its size does not grow with the cluster.
    decision = placement.decision.to_dict(limit=ANSWER_TOP_K)
    body: dict[str, Any] = {"decision": decision, "attempts": [a.to_dict() for a in placement.attempts]}
    if req.dry_run:
        top = placement.decision.top
        return JSONResponse({"id": None, "node": top.node if top else None, "dry_run": True, **body}, status_code=200)
    assert placement.workload is not None
    return JSONResponse({"id": placement.workload["id"], "node": placement.node, "workload": placement.workload,
                         "existing": placement.existing, **body}, status_code=200 if placement.existing else 201)


def checked_near(agent: "Node", near: str | None) -> str:
    """The origin latencies are measured from: `near` if it is a node of this cluster, else this node."""
    if near is None or near == agent.name:
        return agent.name
    view = agent.view.node(near)
    if view is None or not view.admitted:
        raise ApiError(422, "invalid_request", f"near: {near[:80]!r} is not an admitted node of this cluster")
    return near


def user_router(agent: "Node", user_auth: Callable[[Request], Awaitable[User]], fanouts: FanOutLimiter) -> APIRouter:
    router = APIRouter(tags=["users"])
    CurrentUser = Annotated[User, Depends(user_auth)]
    limiter = SpawnLimiter(agent.spawn_rate, agent.spawn_burst)

    @router.put("/v1/policy")
    async def put_policy(request: Request, user: CurrentUser) -> dict[str, Any]:
        require_management(user)
        # The policy loader already parses strictly (size, UTF-8, NaN, duplicate keys).
        policy = loads_policy(await request.body(), source="request policy", default_name="cluster")
        agent.engine.swap(policy)
        agent.log_policy(policy, f"swapped via API by {user.name}")
        return policy.model_dump(mode="json")

    @router.post("/v1/placements")
    async def placements(req: PlacementRequest, user: CurrentUser) -> dict[str, Any]:
        return agent.scheduler.decide(req.spec, policy_from(req.policy), checked_near(agent, req.near)).to_dict()

    @router.post("/v1/workloads", status_code=201)
    async def spawn(req: SpawnRequest, user: CurrentUser) -> JSONResponse:
        limiter.check(user.name)
        if req.request_id and not req.dry_run:
            # The owner decides, but latency stays measured from where the user asked (here, or `near`).
            body = {**req.model_dump(mode="json"), "near": checked_near(agent, req.near)}
            if body["near"] == agent.name:  # what this node measured itself refines the owner's estimates
                body["origin_links"] = agent.links.export()
            forwarded = await forward_to_owner(agent.scheduler, agent.transport, user, req.request_id, body)
            if forwarded is not None:
                answer = forwarded.body if isinstance(forwarded.body, dict) else {}
                if forwarded.status in (200, 201) and isinstance(answer.get("id"), str) and \
                        isinstance(answer.get("node"), str):
                    agent.scheduler.note_holder(answer["id"], answer["node"])
                return JSONResponse(forwarded.body, status_code=forwarded.status)
        return await place_for(agent, user, req)

    @router.get("/v1/workloads")
    async def list_workloads(user: CurrentUser, limit: paging.Limit = None, after: paging.After = None,
                             nodes: paging.Nodes = None) -> dict[str, Any]:
        """Every alive node's workloads (with `nodes`, those nodes' only), ordered by creation; with `limit`, one
        page of them and the cursor of the next (`next`, null on the last page). One request to each node asked
        per page (docs/scale.md)."""
        cursor, only = paging.parse_cursor(after), paging.parse_nodes(nodes)
        if only is None or len(only) > FANOUT_FREE_NODES:
            fanouts.check(user.name)
        workloads: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        more = False
        for node, result in await agent.scheduler.gather("/v1/local/workloads" + paging.query(limit, after), user=user,
                                                         nodes=only):
            if isinstance(result, Exception):
                errors[node] = str(result)
            else:
                workloads.extend(result.get("workloads", []))
                more = more or bool(result.get("more"))
        rows, over = paging.page(workloads, limit, cursor)
        next_cursor = paging.cursor_of(rows[-1]) if rows and (over or more) else None
        return {"workloads": rows, "unreachable": errors, "next": next_cursor}

    async def landing_of(workload_id: str) -> AsyncIterator[str]:
        """The nodes that may run `workload_id`: where this node placed it, then what its directory entry names."""
        hint = agent.scheduler.holder_hint(workload_id)
        if hint is not None:
            yield hint
        entry = await agent.directory.entry_for(workload_id)
        for node in entry.maybe_holding()[:NAMED_ASKED] if entry is not None else ():
            yield node  # the node it was placed on first; a holder naming many nodes is not followed far

    async def find(workload_id: str, user: User) -> str | None:
        """The node holding `workload_id` for `user`: None for this node; 404 when no node shows it to them."""
        record = agent.store.get(checked_id(workload_id))
        if record is not None:
            if can_see(user, record.owner):
                return None
        else:
            # Where this node knows it landed, else where its request id's holders say it went (one request to
            # the first holder, the id names them); only then every node (the cost grows with the cluster).
            asked = {agent.name}
            async for node in landing_of(workload_id):
                if node not in asked:
                    asked.add(node)
                    with contextlib.suppress(PeerUnreachable):
                        r = await agent.transport.request(node, "GET", f"/v1/local/workloads/{workload_id}",
                                                          timeout=LOOKUP_TIMEOUT, user=user)
                        if r.status == 200:
                            agent.scheduler.note_holder(workload_id, node)  # the next stop or logs asks it first
                            return node
            fanouts.check(user.name)
            for node, result in await agent.scheduler.gather(f"/v1/local/workloads/{workload_id}", user=user):
                if node != agent.name and not isinstance(result, Exception):
                    agent.scheduler.note_holder(workload_id, node)
                    return node
        raise ApiError(404, "not_found", f"no alive node has workload {workload_id}")

    async def on_holder(workload_id: str, user: User, method: str, path: str, local: Callable[[], Awaitable[Any]]) -> Any:
        node = await find(workload_id, user)
        if node is None:
            return await local()
        try:
            return relay(await agent.transport.request(node, method, path, timeout=30.0, user=user), node)
        except PeerUnreachable as exc:
            raise ApiError(502, "node_unreachable", str(exc)) from None

    @router.get("/v1/workloads/{workload_id}")
    async def get_workload(workload_id: str, user: CurrentUser) -> dict[str, Any]:
        async def local() -> dict[str, Any]:
            return agent.manager.get(workload_id).to_dict()
        return await on_holder(workload_id, user, "GET", f"/v1/local/workloads/{workload_id}", local)

    @router.delete("/v1/workloads/{workload_id}")
    async def stop_workload(workload_id: str, user: CurrentUser) -> dict[str, Any]:
        async def local() -> dict[str, Any]:
            return (await agent.manager.stop(workload_id)).to_dict()
        stopped = await on_holder(workload_id, user, "DELETE", f"/v1/local/workloads/{workload_id}", local)
        agent.scheduler.unreported.released(workload_id)  # what this node counted for it is free again
        return stopped

    @router.post("/v1/workloads/{workload_id}/remove")
    async def remove_workload(workload_id: str, user: CurrentUser) -> dict[str, Any]:
        async def local() -> dict[str, Any]:
            return {**(await agent.manager.remove(workload_id)).to_dict(), "removed": True}
        return await on_holder(workload_id, user, "POST", f"/v1/local/workloads/{workload_id}/remove", local)

    @router.get("/v1/workloads/{workload_id}/logs")
    async def workload_logs(workload_id: str, user: CurrentUser, tail: TailLines = None) -> StreamingResponse:
        node = await find(workload_id, user)
        if node is None:
            return log_response(agent.manager.iter_logs(workload_id, tail_lines=tail, max_bytes=agent.max_log_bytes))
        query = f"?tail={tail}" if tail is not None else ""
        stack = AsyncExitStack()
        try:
            upstream = await stack.enter_async_context(agent.transport.stream(
                node, "GET", f"/v1/local/workloads/{workload_id}/logs{query}", timeout=30.0, user=user))
            if upstream.status != 200:
                relay(PeerResponse(upstream.status, await upstream.text()), node)
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, PeerUnreachable):
                raise ApiError(502, "node_unreachable", str(exc)) from None
            raise
        return log_response(_relayed(upstream, stack, agent.max_log_bytes, node))

    return router
