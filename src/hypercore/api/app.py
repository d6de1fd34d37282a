"""The HTTP API of a node agent (FastAPI; OpenAPI document at /openapi.json).

Public reads: /healthz, /v1/ping, /metrics, GET /v1/nodes, GET /v1/policy.
Everything else — spawns, stops, logs, workload lists, placements, policy
swaps and the node-to-node /v1/local/* endpoints — needs the cluster token
(`Authorization: Bearer <token>`) when the agent has one.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from hypercore.api.models import LocalSpawnRequest, PlacementRequest, SpawnRequest
from hypercore.api.peer import PeerUnreachable
from hypercore.errors import HypercoreError
from hypercore.policy import NoQualifyingNode, PolicyError, loads_policy, parse_policy
from hypercore.runtime.base import RuntimeRefused, WorkloadNotFound
from hypercore.scheduler import DeadlinePassed, PlacementFailed
from hypercore.workload import is_workload_id

if TYPE_CHECKING:
    from hypercore.agent import NodeAgent

log = logging.getLogger("hypercore.api")
FORWARDED = "x-hypercore-forwarded-by"
FORWARD_TIMEOUT_S = 110.0  # under the CLI's 120 s, over any sane placement


class ApiError(HypercoreError):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status, self.code, self.extra = status, code, extra
        super().__init__(message)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    """Pure ASGI guard: a declared body over MAX_BODY_BYTES gets 413 before anything reads it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or ()).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                response = _error(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(agent: "NodeAgent") -> FastAPI:
    app = FastAPI(title="hypercore node agent", version="1", docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit)

    async def require_token(request: Request) -> None:
        # async: a sync dependency would cost a threadpool hop on every call.
        if not agent.token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), agent.token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong cluster token: send 'Authorization: Bearer <token>' (hypercore … --token)")

    auth = [Depends(require_token)]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc), **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(PolicyError)
    async def _policy(_: Request, exc: PolicyError) -> JSONResponse:
        return _error(422, "invalid_policy", str(exc), problems=[str(p) for p in exc.problems])

    @app.exception_handler(NoQualifyingNode)
    async def _no_node(_: Request, exc: NoQualifyingNode) -> JSONResponse:
        return _error(409, "no_qualifying_node", str(exc), decision=exc.decision.to_dict())

    @app.exception_handler(PlacementFailed)
    async def _failed(_: Request, exc: PlacementFailed) -> JSONResponse:
        return _error(503, "placement_failed", str(exc), attempts=[a.to_dict() for a in exc.attempts], decision=exc.decision.to_dict())

    @app.exception_handler(RuntimeRefused)
    async def _refused(_: Request, exc: RuntimeRefused) -> JSONResponse:
        return _error(409, "refused", str(exc))

    @app.exception_handler(DeadlinePassed)
    async def _late(_: Request, exc: DeadlinePassed) -> JSONResponse:
        return _error(409, "deadline_passed", str(exc))

    @app.exception_handler(WorkloadNotFound)
    async def _not_found(_: Request, exc: WorkloadNotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    def _policy_from(body: dict[str, Any] | None):  # type: ignore[no-untyped-def]
        return None if body is None else parse_policy(body, source="request policy", default_name="inline")

    def _checked_id(workload_id: str) -> str:
        if not is_workload_id(workload_id):
            raise ApiError(404, "not_found", f"{workload_id!r} is not a workload id (ids are UUIDs)")
        return workload_id

    # -- public reads ---------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "node": agent.name}

    @app.get("/v1/ping")
    async def ping() -> dict[str, Any]:
        return {"node": agent.name}

    @app.get("/metrics")
    async def metrics() -> Response:
        agent.refresh_gauges()
        return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/nodes")
    async def nodes() -> dict[str, Any]:
        return {"nodes": [dict(n.record(), problem=n.problem) for n in agent.view.nodes()]}

    @app.get("/v1/policy")
    async def get_policy() -> dict[str, Any]:
        return agent.engine.policy.model_dump(mode="json")

    # -- cluster-wide operations ------------------------------------------------

    @app.put("/v1/policy", dependencies=auth)
    async def put_policy(request: Request) -> dict[str, Any]:
        # The policy loader already parses strictly (size, UTF-8, NaN, duplicate keys).
        policy = loads_policy(await request.body(), source="request policy", default_name="cluster")
        agent.engine.swap(policy)
        agent.log_policy(policy, "swapped via API")
        return policy.model_dump(mode="json")

    @app.post("/v1/placements", dependencies=auth)
    async def placements(req: PlacementRequest) -> dict[str, Any]:
        decision = agent.scheduler.decide(req.spec, _policy_from(req.policy))
        return decision.to_dict()

    @app.post("/v1/workloads", dependencies=auth, status_code=201)
    async def spawn(req: SpawnRequest, request: Request) -> JSONResponse:
        policy = _policy_from(req.policy)
        if req.request_id and not req.dry_run and FORWARDED not in request.headers:
            # One node places a given request id, so that the same request sent
            # to two nodes at once still yields one workload.
            owner, url = agent.scheduler.owner_of(req.request_id)
            if url is not None:
                try:
                    r = await agent.peers.request("POST", f"{url}/v1/workloads", json_body=req.model_dump(mode="json"),
                                                  timeout=FORWARD_TIMEOUT_S, headers={FORWARDED: agent.name})
                    return JSONResponse(r.json(), status_code=r.status)
                except PeerUnreachable as exc:
                    if exc.timed_out:
                        # The owner may still be placing it: placing here too could
                        # make a second copy. The request id makes a retry safe.
                        raise ApiError(504, "owner_timeout", f"node {owner}, which places request {req.request_id!r}, "
                                       f"did not answer in {FORWARD_TIMEOUT_S:g} s; retry with the same request id") from None
                    log.warning("request owner unreachable; placing here", extra={"owner": owner, "error": str(exc)})
        placement = await agent.scheduler.place(req.spec, policy, request_id=req.request_id, dry_run=req.dry_run)
        body: dict[str, Any] = {"decision": placement.decision.to_dict(), "attempts": [a.to_dict() for a in placement.attempts]}
        if req.dry_run:
            top = placement.decision.top
            return JSONResponse({"id": None, "node": top.node if top else None, "dry_run": True, **body}, status_code=200)
        assert placement.workload is not None
        return JSONResponse({"id": placement.workload["id"], "node": placement.node, "workload": placement.workload,
                             "existing": placement.existing, **body}, status_code=200 if placement.existing else 201)

    @app.get("/v1/workloads", dependencies=auth)
    async def list_workloads() -> dict[str, Any]:
        workloads: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        for node, result in await agent.scheduler.gather("/v1/local/workloads"):
            if isinstance(result, Exception):
                errors[node] = str(result)
            else:
                workloads.extend(result.get("workloads", []))
        workloads.sort(key=lambda w: (w.get("created_at") or 0, w["id"]))
        return {"workloads": workloads, "unreachable": errors}

    async def _find(workload_id: str) -> tuple[str, str | None]:
        """(node, api url or None for this node) holding the workload."""
        try:
            agent.manager.get(workload_id)
            return agent.name, None
        except WorkloadNotFound:
            pass
        for node, result in await agent.scheduler.gather(f"/v1/local/workloads/{workload_id}"):
            if not isinstance(result, Exception):
                view = agent.view.node(node)
                return node, view.api_url if view else None
        raise ApiError(404, "not_found", f"no alive node has workload {workload_id}")

    @app.get("/v1/workloads/{workload_id}", dependencies=auth)
    async def get_workload(workload_id: str) -> dict[str, Any]:
        node, url = await _find(_checked_id(workload_id))
        if url is None:
            return agent.manager.get(workload_id).to_dict()
        return await agent.forward("GET", f"{url}/v1/local/workloads/{workload_id}")

    @app.delete("/v1/workloads/{workload_id}", dependencies=auth)
    async def stop_workload(workload_id: str) -> dict[str, Any]:
        node, url = await _find(_checked_id(workload_id))
        if url is None:
            return (await agent.manager.stop(workload_id)).to_dict()
        return await agent.forward("DELETE", f"{url}/v1/local/workloads/{workload_id}")

    @app.post("/v1/workloads/{workload_id}/remove", dependencies=auth)
    async def remove_workload(workload_id: str) -> dict[str, Any]:
        node, url = await _find(_checked_id(workload_id))
        if url is None:
            return {**(await agent.manager.remove(workload_id)).to_dict(), "removed": True}
        return await agent.forward("POST", f"{url}/v1/local/workloads/{workload_id}/remove")

    @app.get("/v1/workloads/{workload_id}/logs", dependencies=auth)
    async def workload_logs(workload_id: str, tail: int | None = None) -> PlainTextResponse:
        node, url = await _find(_checked_id(workload_id))
        if url is None:
            return PlainTextResponse(agent.manager.read_logs(workload_id, tail).decode("utf-8", "replace"))
        query = f"?tail={tail}" if tail else ""
        return PlainTextResponse(await agent.forward("GET", f"{url}/v1/local/workloads/{workload_id}/logs{query}", text=True))

    # -- node-local endpoints the scheduler calls --------------------------------

    @app.post("/v1/local/workloads", dependencies=auth, status_code=201)
    async def local_spawn(req: LocalSpawnRequest) -> dict[str, Any]:
        return await agent.scheduler.accept_here(req)

    @app.get("/v1/local/placements/{workload_id}", dependencies=auth)
    async def local_placement(workload_id: str) -> dict[str, Any]:
        entry = agent.scheduler.placements.get(_checked_id(workload_id))
        if entry is None:
            raise ApiError(404, "not_found", f"node {agent.name} placed no workload {workload_id}")
        return {"id": workload_id, **entry}

    @app.get("/v1/local/workloads", dependencies=auth)
    async def local_list() -> dict[str, Any]:
        return {"workloads": [r.to_dict() for r in agent.manager.list()]}

    @app.get("/v1/local/workloads/{workload_id}", dependencies=auth)
    async def local_get(workload_id: str) -> dict[str, Any]:
        return agent.manager.get(_checked_id(workload_id)).to_dict()

    @app.delete("/v1/local/workloads/{workload_id}", dependencies=auth)
    async def local_stop(workload_id: str, reason: str | None = None) -> dict[str, Any]:
        record = await agent.manager.stop(_checked_id(workload_id), reason=_stop_reason(reason))
        agent.beacon_changed()
        return record.to_dict()

    @app.post("/v1/local/workloads/{workload_id}/remove", dependencies=auth)
    async def local_remove(workload_id: str) -> dict[str, Any]:
        return {**(await agent.manager.remove(_checked_id(workload_id))).to_dict(), "removed": True}

    @app.get("/v1/local/workloads/{workload_id}/logs", dependencies=auth)
    async def local_logs(workload_id: str, tail: int | None = None) -> PlainTextResponse:
        data = agent.manager.read_logs(_checked_id(workload_id), tail)
        return PlainTextResponse(data.decode("utf-8", "replace"))

    app.include_router(agent.failover.router(require_token))
    return app


def _stop_reason(reason: str | None) -> str | None:
    # Only the scheduler's own reasons are recorded; free text stays out of the registry.
    return {"retracted": "retracted: the placement attempt timed out and went elsewhere"}.get(reason or "")
