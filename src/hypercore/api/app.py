"""The HTTP API of a node agent (FastAPI; OpenAPI document at /openapi.json).

Public reads: /healthz, /v1/ping, /metrics, GET /v1/nodes, GET /v1/policy.
Users' routes (hypercore.api.user_routes) need a user token; node-only
routes (hypercore.api.node_routes, hypercore.api.failover_routes,
hypercore.api.directory_routes) need a
cluster node's client certificate. See hypercore.api.auth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import fastapi.routing
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from hypercore.api.auth import make_dependencies
from hypercore.api.console import install_console
from hypercore.api.errors import ApiError, error_response
from hypercore.api.fastping import FastPing
from hypercore.api.directory_routes import directory_router
from hypercore.api.failover_routes import failover_router
from hypercore.api.limits import MAX_BODY_BYTES, BodyLimit
from hypercore.api.node_routes import node_router
from hypercore.api.pages import MAX_LIMIT, checked_after, checked_limit, page_of
from hypercore.api.ratelimit import FANOUT_BURST, FANOUT_RATE, FanOutLimiter
from hypercore.api.user_routes import checked_near, user_router
from hypercore.policy import NoQualifyingNode, PolicyError, parse_json_strict
from hypercore.runtime.base import RuntimeRefused, WorkloadNotFound
from hypercore.placement import DeadlinePassed, OwnerGarbled, OwnerTimeout, PlacementFailed
from hypercore.placement.model import ANSWER_TOP_K

if TYPE_CHECKING:
    from hypercore.node import Node

__all__ = ["MAX_BODY_BYTES", "ApiError", "create_app"]

log = logging.getLogger("hypercore.api")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


async def _unparsable_body(request: Request, exc: StarletteHTTPException) -> JSONResponse | None:
    """A 422 naming the value, for a body FastAPI could not parse for a reason other than bad syntax.

    FastAPI answers 400 "There was an error parsing the body" when json.loads raises anything but a
    JSONDecodeError: an integer past Python's 4,300-digit limit, nesting too deep, bytes that are not
    UTF-8. The strict parser says which value it is (the body was read already, the request keeps it).
    """
    if exc.status_code != 400 or not isinstance(exc.__cause__, (ValueError, RecursionError)):
        return None
    try:
        parse_json_strict((await request.body()).decode("utf-8"), "request body")
    except PolicyError as err:
        return error_response(422, "invalid_request", str(err), problems=[str(p) for p in err.problems])
    except UnicodeDecodeError:
        return error_response(422, "invalid_request", "request body is not UTF-8 text")
    except Exception:  # noqa: BLE001 - the body is gone; say what we know
        pass
    return error_response(422, "invalid_request", "request body is not valid JSON (a number out of range, or nested too deeply)")


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        response = error_response(exc.status, exc.code, str(exc), **exc.extra)
        if "retry_after" in exc.extra:
            response.headers["Retry-After"] = str(exc.extra["retry_after"])
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return await _unparsable_body(request, exc) or error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(PolicyError)
    async def _policy(_: Request, exc: PolicyError) -> JSONResponse:
        return error_response(422, "invalid_policy", str(exc), problems=[str(p) for p in exc.problems])

    @app.exception_handler(NoQualifyingNode)
    async def _no_node(_: Request, exc: NoQualifyingNode) -> JSONResponse:
        return error_response(409, "no_qualifying_node", str(exc), decision=exc.decision.to_dict(limit=ANSWER_TOP_K))

    @app.exception_handler(PlacementFailed)
    async def _failed(_: Request, exc: PlacementFailed) -> JSONResponse:
        return error_response(503, "placement_failed", str(exc), attempts=[a.to_dict() for a in exc.attempts],
                              decision=exc.decision.to_dict(limit=ANSWER_TOP_K))

    for exc_type, (status, code) in _PLAIN_ERRORS.items():
        app.add_exception_handler(exc_type, _plain_handler(status, code))


# Errors whose message says all there is: each is only a status and a code.
_PLAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    OwnerTimeout: (504, "owner_timeout"),
    OwnerGarbled: (502, "upstream"),
    RuntimeRefused: (409, "refused"),
    DeadlinePassed: (409, "deadline_passed"),
    WorkloadNotFound: (404, "not_found"),
}


def _plain_handler(status: int, code: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_response(status, code, str(exc))
    return handle


def create_app(agent: "Node", allowed_hosts: Iterable[str] = ("*",)) -> FastAPI:
    """The node's API. `allowed_hosts`: the Host header values it answers (others get 400: DNS rebinding)."""
    app = FastAPI(title="hypercore node agent", version="1", docs_url="/docs", redoc_url=None)
    # Added last runs first: probes' pings, then the Host check, then the body limit, then the routes.
    app.add_middleware(BodyLimit)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(FastPing, node=agent.name, allowed_hosts=list(allowed_hosts))
    _error_handlers(app)
    user_auth, node_auth = make_dependencies(agent.tokens, insecure=agent.insecure)

    @app.get("/healthz")
    async def healthz() -> Response:
        # Ready only once the node has published its beacon and read the members: before that,
        # a spawn would find no node at all (not even this one).
        if not agent.ready:
            return JSONResponse({"status": "starting", "node": agent.name}, status_code=503)
        return JSONResponse({"status": "ok", "node": agent.name})

    @app.get("/v1/ping")
    async def ping() -> dict[str, Any]:
        return {"node": agent.name}

    @app.get("/metrics")
    async def metrics() -> Response:
        agent.refresh_gauges()
        return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/nodes")
    async def nodes(near: str | None = None,
                    limit: Annotated[str | None, Query(description=f"At most this many members (1 to {MAX_LIMIT:,}); "
                                                                   "default: all of them.")] = None,
                    after: Annotated[str | None, Query(description="Members whose name sorts after this one: "
                                                                   "the `next` of the previous page.")] = None,
                    ) -> dict[str, Any]:
        """Every member as this node sees it, in name order: links measured from this node (or `near`, from
        network coordinates) and reputation from evidence — never what a node says about itself.
        `total` counts every member; `next` is the cursor of the next page (null: none follows)."""
        origin = checked_near(agent, near)
        page = page_of(agent.view.nodes(), lambda n: n.name, checked_limit(limit), checked_after(after))
        out, now = [], time.time()
        scores = agent.reputation.scores([n.name for n in page.items if n.admitted])  # one pass over the views
        for n in page.items:  # links and reputation only for the members of this page
            record = dict(n.record(), problem=n.problem)
            # Load figures are as of the beacon (a spawn is no news: beacon.publisher): say how old they are.
            measured = n.beacon.timestamp if n.beacon is not None else None
            record.update(measured_at=measured, age_s=None if measured is None else round(max(0.0, now - measured), 1))
            if n.admitted:
                link = agent.links.link(origin, n.name)
                record.update(latency_ms=link.latency_ms, jitter_ms=link.jitter_ms, packet_loss=link.packet_loss,
                              link_source=link.source, reputation=scores[n.name],
                              reputation_evidence=agent.reputation.explain(n.name))
            out.append(record)
        return {"origin": origin, "nodes": out, "total": page.total, "next": page.next}

    @app.get("/v1/policy")
    async def get_policy() -> dict[str, Any]:
        return agent.engine.policy.model_dump(mode="json")

    fanouts = FanOutLimiter(FANOUT_RATE, FANOUT_BURST)  # requests that ask every node, per user
    app.include_router(user_router(agent, user_auth, fanouts))
    app.include_router(node_router(agent, node_auth))
    app.include_router(failover_router(agent, node_auth))
    app.include_router(directory_router(agent, node_auth))
    install_console(app, agent, user_auth, node_auth, fanouts)  # the web console at /ui/ (hypercore.api.console)
    prepare_routing(app)
    return app


def prepare_routing(app: FastAPI) -> None:
    """Let FastAPI build its routing tables now rather than at the first request that passes each router.

    FastAPI (0.16x) works out each included router's routes (dependencies, parameter models) the first
    time a request is matched against that router: about 20 ms for this app, paid by whichever request
    came first. In a large cluster that is the first spawn forwarded to a node, the first directory
    claim it holds, the first attempt it takes — most spawns' hops at 100 nodes met a node that had
    never answered that route (docs/scale.md). Matching a path no route has walks every router once.
    Each endpoint's source location (for FastAPI's error messages, read with ``inspect`` at its first
    request: 0.4-0.8 ms) is looked up here too, where this FastAPI has that step.
    """
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/.prepare-routing", "root_path": "",
                             "query_string": b"", "headers": [], "app": app}
    for route in app.router.routes:
        route.matches(scope)
    locate = getattr(fastapi.routing, "_extract_endpoint_context", None)
    routers = [app.router]
    while routers and callable(locate):
        for route in routers.pop().routes:
            if isinstance(route, APIRoute):
                locate(route.endpoint)
            elif isinstance(inner := getattr(route, "original_router", None), APIRouter):
                routers.append(inner)
