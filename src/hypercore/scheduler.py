"""Placement: cluster view → policy engine → try nodes in rank order.

Each attempt is an HTTP call to the chosen node's local endpoint with a
deadline; a refusal, an error or a timeout moves on to the next node. The
result names the node that took the workload and carries the decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypercore.api.peer import PeerClient, PeerUnreachable
from hypercore.errors import HypercoreError
from hypercore.membership.view import ClusterView
from hypercore.metrics import AgentMetrics
from hypercore.policy import Decision, NoQualifyingNode, Policy, PolicyEngine
from hypercore.workload import WorkloadSpec, new_workload_id

# Workload ids of requests that carry a request id are derived from it, so the
# same request yields the same workload id on every node and every retry.
REQUEST_NAMESPACE = uuid.UUID("5f0c2f4e-3a8b-4e53-9a57-2f1f4f8e6b21")


def workload_id_for(request_id: str | None) -> str:
    """The workload id a request gets: derived from its request id, else fresh."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, request_id)) if request_id else new_workload_id()

log = logging.getLogger("hypercore.scheduler")


@dataclass(frozen=True)
class Attempt:
    node: str
    outcome: str  # ok | refused | error | timeout
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "outcome": self.outcome, "detail": self.detail}


class PlacementFailed(HypercoreError):
    """Every ranked node was tried and none took the workload."""

    def __init__(self, decision: Decision, attempts: list[Attempt]) -> None:
        self.decision = decision
        self.attempts = attempts
        tried = "; ".join(f"{a.node}: {a.outcome} ({a.detail})" for a in attempts)
        super().__init__(f"no node took the workload after {len(attempts)} attempts: {tried}")


@dataclass
class Placement:
    decision: Decision
    workload: dict[str, Any] | None = None
    node: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        *,
        view: ClusterView,
        engine: PolicyEngine,
        metrics: AgentMetrics,
        peers: PeerClient,
        attempt_timeout: float = 15.0,
    ) -> None:
        self.view = view
        self.engine = engine
        self.metrics = metrics
        self.peers = peers
        self.attempt_timeout = attempt_timeout

    def decide(self, spec: WorkloadSpec | None, policy: Policy | None) -> Decision:
        started = time.perf_counter()
        table = self.view.table()
        needs = [spec.capability] if spec is not None else []
        decision = self.engine.evaluate(table, policy, require_capabilities=needs)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        top = decision.top
        log.info(
            "policy-based node selection completed",
            extra={
                "policy": decision.policy,
                "candidates": int(table.alive.sum()),
                "selected": len(decision.ranked),
                "top_node": top.node if top else "",
                "fallback": decision.fallback,
            },
        )
        return decision

    async def place(
        self,
        spec: WorkloadSpec,
        policy: Policy | None = None,
        *,
        request_id: str | None = None,
        dry_run: bool = False,
    ) -> Placement:
        decision = self.decide(spec, policy)
        if not len(decision.ranked):
            self.metrics.spawns.labels(result="no_node").inc()
            raise NoQualifyingNode(decision)
        if dry_run:
            return Placement(decision)
        workload_id = workload_id_for(request_id)
        used_policy = policy or self.engine.policy
        placement = Placement(decision)
        total = len(decision.ranked)
        for priority, ranked in enumerate(decision.ranked, 1):
            log.info(
                "attempting to spawn on policy-selected node",
                extra={"node": ranked.node, "priority": priority, "total": total},
            )
            attempt, workload = await self._attempt(ranked.node, workload_id, spec, used_policy, request_id)
            placement.attempts.append(attempt)
            self.metrics.spawn_attempts.labels(outcome=attempt.outcome).inc()
            if workload is not None:
                log.info("successfully spawned VM on policy-selected node", extra={"node": ranked.node, "id": workload["id"]})
                placement.workload, placement.node = workload, ranked.node
                self.metrics.spawns.labels(result="placed").inc()
                return placement
            log.warning(
                "spawn attempt failed; trying next node",
                extra={"node": ranked.node, "outcome": attempt.outcome, "detail": attempt.detail},
            )
        self.metrics.spawns.labels(result="failed").inc()
        raise PlacementFailed(decision, placement.attempts)

    async def _attempt(
        self, node: str, workload_id: str, spec: WorkloadSpec, policy: Policy, request_id: str | None
    ) -> tuple[Attempt, dict[str, Any] | None]:
        view = self.view.node(node)
        url = view.api_url if view else None
        if url is None:
            return Attempt(node, "error", "node advertises no API address"), None
        body = {
            "id": workload_id,
            "spec": spec.model_dump(mode="json"),
            "request_id": request_id,
            "policy": policy.model_dump(mode="json"),
            "deadline": time.time() + self.attempt_timeout,
        }
        try:
            response = await self.peers.request(
                "POST", f"{url}/v1/local/workloads", json_body=body, timeout=self.attempt_timeout
            )
        except PeerUnreachable as exc:
            return Attempt(node, "timeout" if exc.timed_out else "error", str(exc)), None
        if response.status in (200, 201):
            return Attempt(node, "ok"), response.json()
        outcome = "refused" if 400 <= response.status < 500 else "error"
        return Attempt(node, outcome, f"HTTP {response.status}: {response.error_message()}"), None

    async def gather(self, path: str, timeout: float = 5.0) -> list[tuple[str, Any]]:
        """GET `path` from every alive node with an API, concurrently: [(node, json or error)]."""
        nodes = [n for n in self.view.nodes() if n.status == "alive" and n.api_url]

        async def one(name: str, url: str) -> tuple[str, Any]:
            try:
                r = await self.peers.request("GET", f"{url}{path}", timeout=timeout)
                return name, r.json() if r.status == 200 else HypercoreError(f"HTTP {r.status}: {r.error_message()}")
            except (PeerUnreachable, ValueError) as exc:
                return name, HypercoreError(str(exc))

        return list(await asyncio.gather(*(one(n.name, n.api_url) for n in nodes if n.api_url)))
