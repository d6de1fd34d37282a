"""The origin's half of the placement protocol: cluster view → policy engine → nodes in rank order.

Each attempt is a call to the chosen node's node-only endpoint carrying the
workload id, a deadline and this node's name (the origin). A refusal, an
error or a timeout moves on to the next node. The result names the node that
took the workload and carries the decision.

One spawn, one workload (docs/placement-protocol.md):
- a request id names its workload: `workload_id_for(request_id)`;
- a request reaches its request id's owner node first (placement.forwarding),
  which places one request id at a time and first looks for an existing copy
  in its placement directory (placement.directory_sync): the node its entry
  names, and before each attempt the entries the request id's buddies hold;
- an attempt that timed out is retracted in the background (the node may have
  been frozen and start the workload later); the chosen node's side, including
  what it does after a late start, is placement.receiver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Any

from hypercore.beacon.tags import refresh_period
from hypercore.errors import HypercoreError
from hypercore.identity.tokens import User
from hypercore.loops import TaskSet
from hypercore.membership.view import ClusterView
from hypercore.metrics import AgentMetrics
from hypercore.placement.directory import holders_of
from hypercore.placement.directory_sync import Directory
from hypercore.placement.ids import workload_id_for
from hypercore.placement.links import OriginLinks
from hypercore.placement.locks import KeyedLocks
from hypercore.placement.model import Attempt, DeadlinePassed, Placement, PlacementFailed
from hypercore.placement.outliers import OutlierDetector, counts_as_failure
from hypercore.placement.reads import ClusterReads
from hypercore.placement.receiver import Receiver
from hypercore.placement.unreported import QUEUE_DEPTH_HEADER, Unreported
from hypercore.policy import Decision, NoQualifyingNode, Policy, PolicyEngine
from hypercore.reputation import Reputation
from hypercore.runtime.base import RuntimeRefused
from hypercore.runtime.manager import WorkloadManager
from hypercore.transport import PeerUnreachable, Transport
from hypercore.workload import LocalSpawnRequest, WorkloadSpec

log = logging.getLogger("hypercore.scheduler")

RETRACT_FOR_S = 300.0  # how long a timed-out attempt keeps being retracted
_PLACEMENTS_KEPT = 10_000
DECISIONS_KEPT = 50  # the recent placements the web console shows (hypercore.api.console)


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
        reputation: Reputation | None = None,
        links: OriginLinks | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.node_name = node_name
        self.manager = manager
        self.view = view
        self.engine = engine
        self.metrics = metrics
        self.transport = transport
        self.attempt_timeout = attempt_timeout
        self.directory = directory  # where this node's request ids were placed (None: ask every node)
        self._locks = KeyedLocks()  # one per request id being placed
        # workload id → {"state": placing|placed|failed, "node": ...}: what the
        # origin answers a node that finished a start after its deadline.
        self.placements: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Where the spawns this node forwarded landed (workload id -> node): a later stop, logs or remove asked
        # here goes to that node first instead of asking every node (hypercore.api.user_routes.find).
        self.holders: OrderedDict[str, str] = OrderedDict()
        self.unreported = Unreported()  # placements made here that the chosen node's beacon may not show yet
        self.outliers = OutlierDetector()
        self.decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)  # newest last
        self.reputation = reputation
        self.links = links
        self._derived: tuple[Any, Any, float, Any] | None = None  # (view table, key, at, derived table)
        self._tasks = TaskSet()
        self.reads = ClusterReads(view, transport)
        self.receiver = Receiver(node_name=node_name, manager=manager, transport=transport, reads=self.reads,
                                 tasks=self._tasks, start_seconds=metrics.workload_start_seconds)

    # -- deciding ---------------------------------------------------------------

    def _table(self, near: str | None = None) -> Any:
        """The view's table as seen from `near` (default: this node), with what this node placed
        that the beacons do not show yet."""
        def beacon_time(node: str) -> float | None:
            view = self.view.node(node)
            return view.beacon.timestamp if view and view.beacon else None

        refresh = refresh_period(self.view.size())
        answered = self.unreported.answered_after(beacon_time, refresh)  # a chosen node's own newer figure

        def shown(node: str) -> float | None:
            return answered[node][0] if node in answered else beacon_time(node)

        # An answer gives the node's queue depth, not its free CPU and memory: placements count against the
        # queue from the answer on, against CPU and memory from the beacon on. (Counted from the answer for
        # all three, two spawns on either side of a second's turn left a full node's CPU looking free.)
        queued = self.unreported.per_node(shown, refresh)
        unreported = self.unreported.per_node(beacon_time, refresh) if answered else queued
        table = self._derived_table(self.view.table(), near or self.node_name)
        if answered or unreported:
            table = table.with_adjusted(
                values={"queue_depth": {n: float(depth) for n, (_, depth) in answered.items()}},
                added={"queue_depth": {n: c for n, (c, _, _) in queued.items()},
                       "cpu_free": {n: -cpu for n, (_, cpu, _) in unreported.items()},
                       "mem_free_mb": {n: -mem for n, (_, _, mem) in unreported.items()}})
        return table

    def _derived_table(self, table: Any, origin: str) -> Any:
        """Reputation from evidence and links from the origin instead of what nodes say about themselves.

        Cached for a second, or until new evidence, probes or coordinates arrive.
        """
        key = (origin, self.reputation.version if self.reputation else None, self.links.version if self.links else None)
        cached, now = self._derived, time.monotonic()
        if cached is not None and cached[0] is table and cached[1] == key and now - cached[2] < 1.0:
            return cached[3]
        columns = self.links.arrays(origin, table.names) if self.links is not None else {}
        if self.reputation is not None:
            columns["reputation"] = self.reputation.scores_array(table.names)
        derived = table.with_columns(columns) if columns else table
        self._derived = (table, key, now, derived)
        return derived

    def decide(self, spec: WorkloadSpec | None, policy: Policy | None, near: str | None = None) -> Decision:
        """Rank the nodes for `spec`, with latencies as seen from `near` (default: this node)."""
        started = time.perf_counter()
        table = self._table(near)
        needs = [spec.capability] if spec is not None else []
        resources = (spec.cpu, float(spec.mem)) if spec is not None else None
        decision = self.engine.evaluate(table, policy, require_capabilities=needs, require_resources=resources,
                                        exclude=self.outliers.ejected())
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

    def _record(self, decision: Decision, outcome: str, workload_id: str, owner: str | None,
                attempts: list[Attempt], node: str | None = None) -> None:
        """Keep a finished placement for the console: its top 10, its first 10 rejected and how many there were
        (a 100,000-node cluster: 10 of them, not all), its attempts."""
        entry = decision.to_dict(limit=10)
        entry["rejected_total"] = decision.rejected_count
        self.decisions.append({"time": time.time(), "decided_by": self.node_name, "id": workload_id, "owner": owner,
                               "outcome": outcome, "node": node, "decision": entry,
                               "attempts": [a.to_dict() for a in attempts]})

    def holders_of(self, request_id: str) -> list[str]:
        """The nodes that keep `request_id`'s directory entry, its owner first: who may place it, in order
        (only this one while it does not see itself as a peer)."""
        nodes = self.view.peers()
        if self.node_name not in nodes:
            return [self.node_name]
        return holders_of(request_id, nodes)

    def _warm(self, nodes: list[str]) -> None:
        """Open connections to `nodes` (this one aside) ahead of the calls that follow (Transport.warm)."""
        for node in nodes:
            if node != self.node_name:
                self.transport.warm(node)

    # -- placing ------------------------------------------------------------------

    async def place(
        self,
        spec: WorkloadSpec,
        policy: Policy | None = None,
        *,
        request_id: str | None = None,
        dry_run: bool = False,
        owner: str | None = None,
        near: str | None = None,
    ) -> Placement:
        """Place `spec` for user `owner` (None: a workload of no user, e.g. in tests of the engine),
        with latencies as seen from `near` (the node the user asked; default: this node)."""
        if dry_run or request_id is None:
            return await self._place(spec, policy, workload_id_for(None), dry_run=dry_run, owner=owner, near=near)
        async with self._locks.hold(request_id):
            workload_id = workload_id_for(request_id)
            holders = self.directory.holders(request_id) if self.directory is not None else []
            directory = self.directory if self.node_name in holders else None
            if directory is not None:
                self._warm(holders)  # the claim's connections, opened while this node decides
            silent: list[str] = []
            if directory is None:
                # Not one of the request id's holders (its owner could not be reached, or failover
                # respawns from here): no entry to read, so ask every node, as before the directory.
                log.info("not a holder of this request id; asking every node for a copy",
                         extra={"request_id": request_id, "id": workload_id})
                found = await self.reads.live_copy(workload_id)
            else:
                copy, silent = await directory.existing(request_id)  # this node's entry and the node it names
                found = (copy.node, copy.workload) if copy is not None else None
            if found is not None:
                node, workload = found
                log.info("request already placed; returning its workload",
                         extra={"request_id": request_id, "id": workload_id, "node": node})
                return Placement(self.decide(spec, policy, near), workload, node, existing=True)
            return await self._place(spec, policy, workload_id, request_id=request_id, owner=owner, near=near,
                                     directory=directory, maybe=silent)

    async def gather(self, path: str, timeout: float = 5.0, user: User | None = None,
                     nodes: list[str] | None = None) -> list[tuple[str, Any]]:
        return await self.reads.gather(path, timeout=timeout, user=user, nodes=nodes)

    def note_holder(self, workload_id: str, node: str) -> None:
        self.holders[workload_id] = node
        self.holders.move_to_end(workload_id)
        while len(self.holders) > _PLACEMENTS_KEPT:
            self.holders.popitem(last=False)

    def holder_hint(self, workload_id: str) -> str | None:
        """The node this node last knew `workload_id` on (placed by it, or a forwarded spawn's answer)."""
        placed = self.placements.get(workload_id)
        return (placed or {}).get("node") or self.holders.get(workload_id)

    def _remember(self, workload_id: str, state: str, node: str | None) -> None:
        self.placements[workload_id] = {"state": state, "node": node}
        self.placements.move_to_end(workload_id)
        while len(self.placements) > _PLACEMENTS_KEPT:
            self.placements.popitem(last=False)

    async def _place(
        self, spec: WorkloadSpec, policy: Policy | None, workload_id: str, *,
        request_id: str | None = None, dry_run: bool = False, owner: str | None = None, near: str | None = None,
        directory: Directory | None = None, maybe: list[str] | None = None,
    ) -> Placement:
        """Rank, then try the nodes in order. With `directory` (this node holds the request id), each attempt
        is claimed there first; `maybe`: nodes that may hold a copy already (named, but silent)."""
        decision = self.decide(spec, policy, near)
        if not len(decision.ranked):
            self.metrics.spawns.labels(result="no_node").inc()
            if not dry_run:
                self._record(decision, "no_node", workload_id, owner, [])
            raise NoQualifyingNode(decision)
        if dry_run:
            return Placement(decision)
        used_policy = policy or self.engine.policy
        placement = Placement(decision)
        self._remember(workload_id, "placing", None)
        total = len(decision.ranked)
        maybe = list(maybe or [])  # nodes that may hold a copy: silent ones, attempts that timed out or erred
        for priority, ranked in enumerate(decision.ranked, 1):
            # Counted before anything awaits (the directory's claim, the attempt): concurrent decisions must see
            # it at once. (Counted after the claim, a burst of 200 spawns was decided before any was counted,
            # and each owner sent all of its share to one node: 198 of 200.)
            counted = self.unreported.count(ranked.node, workload_id, spec.cpu, float(spec.mem))
            if directory is not None and request_id is not None:
                self._warm([ranked.node])  # the attempt's connection, opened while the claim runs
                copy = await directory.claim(request_id, workload_id, [*maybe, ranked.node])
                if copy is not None:  # placed by another node this one did not know of
                    self.unreported.uncount(counted)
                    self._remember(workload_id, "placed", copy.node)
                    return Placement(decision, copy.workload, copy.node, placement.attempts, existing=True)
            log.info(
                "attempting to spawn on policy-selected node",
                extra={"node": ranked.node, "priority": priority, "total": total},
            )
            attempt, workload = await self._attempt(ranked.node, workload_id, spec, used_policy, request_id, owner)
            placement.attempts.append(attempt)
            self.outliers.record(ranked.node, attempt.outcome, attempt.detail)
            if self.reputation is not None and (attempt.outcome == "ok" or
                                                counts_as_failure(attempt.outcome, attempt.detail)):
                self.reputation.observe(ranked.node, attempt.outcome == "ok", f"attempt {attempt.outcome}")
            self.metrics.spawn_attempts.labels(outcome=attempt.outcome).inc()
            if workload is None:
                self.unreported.uncount(counted)
            else:
                self.unreported.accepted(counted)
                log.info("successfully spawned VM on policy-selected node", extra={"node": ranked.node, "id": workload["id"]})
                self._remember(workload_id, "placed", ranked.node)
                if directory is not None and request_id is not None:
                    directory.settle(request_id, workload_id, "placed", node=ranked.node)
                placement.workload, placement.node = workload, ranked.node
                self.metrics.spawns.labels(result="placed").inc()
                self._record(decision, "placed", workload_id, owner, placement.attempts, ranked.node)
                # A node whose agent died under the attempt may have started it (a restarted agent adopts
                # what it started): now that it runs elsewhere, take that copy back once the node answers.
                # (Had every attempt failed, that copy would be the one a retry of the request finds.)
                for earlier in placement.attempts[:-1]:
                    if earlier.outcome == "error" and earlier.node != self.node_name:
                        self._tasks.spawn(self._retract(earlier.node, workload_id))
                tried = {a.node for a in placement.attempts}
                for silent in maybe:  # named by the directory but did not answer: take back what it may hold
                    if silent not in tried and silent != self.node_name:
                        self._tasks.spawn(self._retract(silent, workload_id))
                return placement
            if attempt.outcome in ("timeout", "error"):
                maybe.append(ranked.node)
            if attempt.outcome == "timeout" and ranked.node != self.node_name:
                # The node may still start it (frozen, slow): take it back once it answers.
                self._tasks.spawn(self._retract(ranked.node, workload_id))
            log.warning(
                "spawn attempt failed; trying next node",
                extra={"node": ranked.node, "outcome": attempt.outcome, "detail": attempt.detail},
            )
        self._remember(workload_id, "failed", None)
        if directory is not None and request_id is not None:
            directory.settle(request_id, workload_id, "failed", trying=maybe)
        self.metrics.spawns.labels(result="failed").inc()
        self._record(decision, "failed", workload_id, owner, placement.attempts)
        raise PlacementFailed(decision, placement.attempts)

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
                workload = await asyncio.wait_for(
                    self.receiver.accept(LocalSpawnRequest.model_validate(body)), self.attempt_timeout)
                self.unreported.answered(node, self.manager.queue_depth())
                return Attempt(node, "ok"), workload
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
            self.unreported.answered(node, response.headers.get(QUEUE_DEPTH_HEADER))
            return Attempt(node, "ok"), response.json()
        outcome = "refused" if 400 <= response.status < 500 else "error"
        return Attempt(node, outcome, f"HTTP {response.status}: {response.error_message()}"), None

    # -- taking back what was not ours --------------------------------------------------

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

    async def close(self) -> None:
        await self._tasks.close()
