"""Placement: cluster view → policy engine → try nodes in rank order.

Each attempt is an HTTP call to the chosen node's local endpoint carrying the
workload id, a deadline and this node's name (the origin). A refusal, an
error or a timeout moves on to the next node. The result names the node that
took the workload and carries the decision.

One spawn, one workload (see docs/placement-protocol.md):
- a request id names its workload: `workload_id_for(request_id)`;
- the spawn route forwards a request to the request id's owner node
  (rendezvous hashing), which places one request id at a time and first looks
  for an existing copy anywhere in the cluster;
- an attempt that timed out is retracted in the background (the node may have
  been frozen and start the workload later), and a node that finishes a start
  after its deadline asks the origin whether the placement is still its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypercore.errors import HypercoreError
from hypercore.identity.tokens import User
from hypercore.membership.view import ClusterView
from hypercore.metrics import AgentMetrics
from hypercore.policy import Decision, NoQualifyingNode, Policy, PolicyEngine
from hypercore.runtime.base import RuntimeRefused
from hypercore.runtime.manager import WorkloadManager
from hypercore.transport import PeerUnreachable, Transport
from hypercore.workload import LocalSpawnRequest, WorkloadSpec, new_workload_id

log = logging.getLogger("hypercore.scheduler")

# Workload ids of requests that carry a request id are derived from it, so the
# same request yields the same workload id on every node and every retry.
REQUEST_NAMESPACE = uuid.UUID("5f0c2f4e-3a8b-4e53-9a57-2f1f4f8e6b21")
RETRACT_FOR_S = 300.0  # how long a timed-out attempt keeps being retracted
_PLACEMENTS_KEPT = 10_000


def user_request_id(user: str, request_id: str) -> str:
    """A user's request id as the cluster keys it: two users' "job-1" are two requests, not one."""
    return f"{user}/{request_id}"


def workload_id_for(request_id: str | None) -> str:
    """The workload id a request gets: derived from its request id, else fresh."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, request_id)) if request_id else new_workload_id()


def rendezvous_rank(key: str, nodes: Iterable[str]) -> list[str]:
    """Nodes ordered by highest-random-weight hashing for `key`, best first; stable as members come and go.

    Used for request-id owners here and for failover buddies (hypercore.failover).
    """
    return sorted(set(nodes), key=lambda n: hashlib.sha256(f"{key}\0{n}".encode()).digest(), reverse=True)


@dataclass(frozen=True)
class Attempt:
    node: str
    outcome: str  # ok | refused | error | timeout
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "outcome": self.outcome, "detail": self.detail}


class DeadlinePassed(HypercoreError):
    """A placement attempt arrived after its deadline; the origin has moved on."""


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
    existing: bool = False  # the request had already been placed; nothing new started


class Scheduler:
    def __init__(
        self,
        *,
        node_name: str,
        view: ClusterView,
        engine: PolicyEngine,
        metrics: AgentMetrics,
        transport: Transport,
        attempt_timeout: float = 15.0,
        manager: WorkloadManager | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.node_name = node_name
        self.manager = manager
        self.on_change = on_change  # called after this node accepted a workload
        self.view = view
        self.engine = engine
        self.metrics = metrics
        self.transport = transport
        self.attempt_timeout = attempt_timeout
        # One lock per request id being placed, with how many callers hold or await it.
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # workload id → {"state": placing|placed|failed, "node": ...}: what the
        # origin answers a node that finished a start after its deadline.
        self.placements: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Placements made here that the chosen node's beacon may not show yet.
        self._recent: dict[str, list[float]] = defaultdict(list)
        self._background: set[asyncio.Task[None]] = set()

    # -- deciding ---------------------------------------------------------------

    def _unreported(self) -> dict[str, int]:
        """Per node, placements made here since its published beacon was measured."""
        out: dict[str, int] = {}
        cutoff = time.time() - 60.0
        for node, times in list(self._recent.items()):
            times[:] = [t for t in times if t > cutoff]
            view = self.view.node(node)
            since = view.beacon.timestamp if view and view.beacon else cutoff
            if n := sum(1 for t in times if t >= since):
                out[node] = n
        return out

    def decide(self, spec: WorkloadSpec | None, policy: Policy | None) -> Decision:
        started = time.perf_counter()
        table = self.view.table(queue_extra=self._unreported())
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

    def owner_of(self, request_id: str) -> str:
        """The node that places `request_id` (this one while it does not see itself as a peer)."""
        nodes = self.view.peers()
        if self.node_name not in nodes:
            return self.node_name
        return rendezvous_rank(request_id, nodes)[0]

    # -- placing ------------------------------------------------------------------

    async def place(
        self,
        spec: WorkloadSpec,
        policy: Policy | None = None,
        *,
        request_id: str | None = None,
        dry_run: bool = False,
        owner: str | None = None,
    ) -> Placement:
        """Place `spec` for user `owner` (None: a workload of no user, e.g. in tests of the engine)."""
        if dry_run or request_id is None:
            return await self._place(spec, policy, workload_id_for(None), dry_run=dry_run, owner=owner)
        lock, users = self._locks.setdefault(request_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                workload_id = workload_id_for(request_id)
                found = await self.find(workload_id)
                if found is not None:
                    node, workload = found
                    log.info("request already placed; returning its workload",
                             extra={"request_id": request_id, "id": workload_id, "node": node})
                    return Placement(self.decide(spec, policy), workload, node, existing=True)
                return await self._place(spec, policy, workload_id, request_id=request_id, owner=owner)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[request_id]

    async def find(self, workload_id: str) -> tuple[str, dict[str, Any]] | None:
        """A live copy of `workload_id` on any alive node (asked concurrently), or None."""
        for node, result in await self.gather(f"/v1/local/workloads/{workload_id}"):
            if not isinstance(result, Exception) and result.get("state") in ("pending", "running", "exited", "stopped"):
                return node, result
        return None

    def _remember(self, workload_id: str, state: str, node: str | None) -> None:
        self.placements[workload_id] = {"state": state, "node": node}
        self.placements.move_to_end(workload_id)
        while len(self.placements) > _PLACEMENTS_KEPT:
            self.placements.popitem(last=False)

    async def _place(
        self, spec: WorkloadSpec, policy: Policy | None, workload_id: str, *,
        request_id: str | None = None, dry_run: bool = False, owner: str | None = None,
    ) -> Placement:
        decision = self.decide(spec, policy)
        if not len(decision.ranked):
            self.metrics.spawns.labels(result="no_node").inc()
            raise NoQualifyingNode(decision)
        if dry_run:
            return Placement(decision)
        used_policy = policy or self.engine.policy
        placement = Placement(decision)
        self._remember(workload_id, "placing", None)
        total = len(decision.ranked)
        for priority, ranked in enumerate(decision.ranked, 1):
            log.info(
                "attempting to spawn on policy-selected node",
                extra={"node": ranked.node, "priority": priority, "total": total},
            )
            # Counted before the attempt: concurrent decisions must see it at once.
            counted = time.time()
            self._recent[ranked.node].append(counted)
            attempt, workload = await self._attempt(ranked.node, workload_id, spec, used_policy, request_id, owner)
            placement.attempts.append(attempt)
            self.metrics.spawn_attempts.labels(outcome=attempt.outcome).inc()
            if workload is None:
                with contextlib.suppress(ValueError):
                    self._recent[ranked.node].remove(counted)
            else:
                log.info("successfully spawned VM on policy-selected node", extra={"node": ranked.node, "id": workload["id"]})
                self._remember(workload_id, "placed", ranked.node)
                placement.workload, placement.node = workload, ranked.node
                self.metrics.spawns.labels(result="placed").inc()
                return placement
            if attempt.outcome == "timeout":
                # The node may still start it (frozen, slow): take it back.
                self._spawn_background(self._retract(ranked.node, workload_id))
            log.warning(
                "spawn attempt failed; trying next node",
                extra={"node": ranked.node, "outcome": attempt.outcome, "detail": attempt.detail},
            )
        self._remember(workload_id, "failed", None)
        self.metrics.spawns.labels(result="failed").inc()
        raise PlacementFailed(decision, placement.attempts)

    async def accept_here(self, req: LocalSpawnRequest) -> dict[str, Any]:
        """Run a placement attempt on this node (POST /v1/local/workloads, or directly for ourselves)."""
        if req.deadline is not None and time.time() > req.deadline:
            raise DeadlinePassed("placement deadline passed before this node could start the workload")
        if self.manager is None:
            raise RuntimeRefused(f"node {self.node_name} runs no workloads")
        record = await self.manager.accept(req.spec, workload_id=req.id, request_id=req.request_id, policy=req.policy,
                                           owner=req.owner)
        if self.on_change is not None:
            self.on_change()
        if req.deadline is not None and time.time() > req.deadline:
            # Started after the deadline (this node was slow or frozen): the
            # origin may have placed it elsewhere meanwhile. Ask, and stop ours if so.
            manager = self.manager

            async def stop(reason: str) -> None:
                log.warning("stopping a late copy", extra={"id": req.id, "reason": reason})
                await manager.stop(req.id, reason=reason)

            self._spawn_background(self.confirm_late_start(req.id, req.origin, stop))
        return record.to_dict()

    async def _attempt(
        self, node: str, workload_id: str, spec: WorkloadSpec, policy: Policy, request_id: str | None,
        owner: str | None,
    ) -> tuple[Attempt, dict[str, Any] | None]:
        body = {
            "owner": owner,
            "id": workload_id,
            "spec": spec.model_dump(mode="json"),
            "request_id": request_id,
            "policy": policy.model_dump(mode="json"),
            "deadline": time.time() + self.attempt_timeout,
            "origin": self.node_name,
        }
        if node == self.node_name and self.manager is not None:
            # Our own node: the same attempt, without an HTTP round trip to ourselves.
            try:
                return Attempt(node, "ok"), await asyncio.wait_for(
                    self.accept_here(LocalSpawnRequest.model_validate(body)), self.attempt_timeout)
            except asyncio.TimeoutError:
                return Attempt(node, "timeout", f"no answer within {self.attempt_timeout:g} s"), None
            except (RuntimeRefused, DeadlinePassed) as exc:
                return Attempt(node, "refused", str(exc)), None
            except HypercoreError as exc:
                return Attempt(node, "error", str(exc)), None
        try:
            response = await self.transport.request(
                node, "POST", "/v1/local/workloads", json_body=body, timeout=self.attempt_timeout
            )
        except PeerUnreachable as exc:
            return Attempt(node, "timeout" if exc.timed_out else "error", str(exc)), None
        if response.status in (200, 201):
            return Attempt(node, "ok"), response.json()
        outcome = "refused" if 400 <= response.status < 500 else "error"
        return Attempt(node, outcome, f"HTTP {response.status}: {response.error_message()}"), None

    # -- taking back what was not ours --------------------------------------------------

    def _spawn_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retract(self, node: str, workload_id: str) -> None:
        """Stop `workload_id` on `node` once it answers (a frozen node answers when thawed)."""
        deadline = time.monotonic() + RETRACT_FOR_S
        while time.monotonic() < deadline:
            view = self.view.node(node)
            if view is None or view.status in ("left", "failed") or not view.admitted:
                return  # gone: its failover, not us, deals with what it ran
            if self.placements.get(workload_id, {}).get("node") == node:
                return  # a later retry of the same request landed there after all
            try:
                r = await self.transport.request(node, "DELETE", f"/v1/local/workloads/{workload_id}?reason=retracted",
                                                 timeout=self.attempt_timeout)
                if r.status in (200, 404):
                    log.info("retracted a timed-out placement attempt",
                             extra={"node": node, "id": workload_id, "found": r.status == 200})
                    return
            except PeerUnreachable:
                pass
            await asyncio.sleep(1.0)

    async def confirm_late_start(self, workload_id: str, origin: str | None, stop: Any) -> None:
        """This node finished starting `workload_id` after the deadline: keep it only if it is ours.

        `stop(reason)` stops the local copy. The origin knows where the
        placement went; if it cannot be asked, any other live copy wins.
        """
        for _ in range(30):
            verdict = await self._ask_origin(workload_id, origin)
            if verdict == "ours":
                return
            if verdict == "placing":
                await asyncio.sleep(1.0)
                continue
            if verdict is not None:
                await stop(verdict)
                return
            # Origin unreachable: another live copy means this one is the extra.
            for node, result in await self.gather(f"/v1/local/workloads/{workload_id}"):
                if node != self.node_name and not isinstance(result, Exception) and result.get("state") == "running":
                    await stop(f"placed on {node} while this node was late")
                    return
            return

    async def _ask_origin(self, workload_id: str, origin: str | None) -> str | None:
        """'ours', 'placing', a reason to stop, or None when the origin cannot be asked."""
        if not origin:
            return None
        try:
            r = await self.transport.request(origin, "GET", f"/v1/local/placements/{workload_id}", timeout=5.0)
        except PeerUnreachable:
            return None
        if r.status != 200:
            return None
        entry = r.json()
        if entry.get("state") == "placing":
            return "placing"
        if entry.get("state") == "placed" and entry.get("node") == self.node_name:
            return "ours"
        if entry.get("state") == "placed":
            return f"placed on {entry.get('node')} after this node missed its deadline"
        return "the placement failed after this node missed its deadline"

    # -- reading across the cluster ----------------------------------------------------

    async def gather(self, path: str, timeout: float = 5.0, user: User | None = None) -> list[tuple[str, Any]]:
        """GET `path` from every reachable node (this one included), concurrently: [(node, json or error)].

        With `user`, each node answers as it would answer that user.
        """
        out: list[tuple[str, Any]] = []
        for node, r in await self.transport.gather(self.view.peers(), "GET", path, timeout=timeout, user=user):
            if isinstance(r, PeerUnreachable):
                out.append((node, r))
                continue
            try:
                out.append((node, r.json() if r.status == 200 else HypercoreError(f"HTTP {r.status}: {r.error_message()}")))
            except ValueError as exc:
                out.append((node, HypercoreError(f"node {node}: answer is not JSON ({exc})")))
        return out

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
