"""Respawn: when a node fails, its workloads are placed again — once in the cluster.

Each flagged node that holds the failed owner's manifest ranks the alive
nodes by the same hash as the buddies and asks the ones ranked above it (and
the top k+2) for their copy. The highest-ranked flagged holder is the
*respawner*: it acts at once. Every other flagged holder waits a grace
period, then checks by fan-out which workloads were placed again and places
only the missing ones (and not while the respawner says it is still placing).
A respawn's request id is "respawn:<original id>", so a second placement of
the same workload yields the same workload. Each one is recorded as a move,
which reaches the owner when it is back (hypercore.failover.returning).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from hypercore.errors import HypercoreError
from hypercore.failover.context import Context
from hypercore.failover.model import (
    CHECK_DEBOUNCE,
    DELIVERY_RETRY,
    MAX_DEFER,
    RESPAWN_CONCURRENCY,
    Manifest,
    ManifestEntry,
    Move,
    RespawnRequest,
    holder_rank,
    respawn_id,
    respawn_request_id,
)
from hypercore.loops import Backoff
from hypercore.placement.forwarding import FORWARD_TIMEOUT_S, first_placer
from hypercore.placement.model import Placement, PlacementFailed
from hypercore.policy import NoQualifyingNode, Policy
from hypercore.workload import EXISTING_STATES

log = logging.getLogger("hypercore.failover")
RESPAWN_PATH = "/v1/local/failover/respawn"  # a manifest entry, placed again by its respawn request id's owner


@dataclass
class _Holder:
    flagged: bool
    acting: bool
    version: int
    manifest: dict[str, Any] | Manifest


@dataclass
class _Election:
    manifest: Manifest | None
    respawner: str | None
    respawner_acting: bool
    holders: list[str] = field(default_factory=list)


class Respawner:
    def __init__(self, ctx: Context, on_peers_back: Any) -> None:
        self.ctx = ctx
        self._on_peers_back = on_peers_back  # async (reason) → None: check whether our own workloads moved
        self._statuses: dict[str, str] = {}  # each member's Serf status at the last tick
        self._statuses_version = -1  # of the view's status change log, at the last tick (-1: read them all)
        self._episodes: dict[str, tuple[asyncio.Task[None], int]] = {}  # owner → (handler, manifest version)
        self._failed_since: dict[str, float] = {}
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._delivery_retry: dict[str, float] = {}
        self._last_check = float("-inf")
        self._sem = asyncio.Semaphore(RESPAWN_CONCURRENCY)

    def _delivered(self, owner: str, _task: Any) -> None:
        self._deliveries.pop(owner, None)
        self.ctx.watch_wakeup.set()

    async def _peers_back(self, reason: str) -> None:
        await self._on_peers_back(reason)

    def tick(self) -> float | None:
        """Watch members: start a failure episode per failed owner held here; deliver moves to returning owners.
        Returns the seconds until a delivery may be retried (None: nothing waits on time)."""
        statuses, back = self._follow_statuses()
        now = time.monotonic()
        # Peers back from failed: from inside a healed partition, that is how our own return looks.
        if back and now - self._last_check >= CHECK_DEBOUNCE:
            self._last_check = now
            self.ctx.tasks.spawn(self._peers_back(f"{','.join(back)} came back from failed"))
        # Failure episodes: one handler per failed owner whose manifest is held here.
        held = {owner: version for owner, version, _received in self.ctx.replicas.owners()}
        for owner, (task, version) in list(self._episodes.items()):
            # Over when the owner is back, or when a newer manifest of it arrived meanwhile.
            if task.done() and (statuses.get(owner) != "failed" or held.get(owner, version) > version):
                del self._episodes[owner]
                if statuses.get(owner) != "failed":
                    self._failed_since.pop(owner, None)
        if self.ctx.flagged:
            for owner, version in held.items():
                if owner != self.ctx.name and statuses.get(owner) == "failed" and owner not in self._episodes:
                    if owner not in self._failed_since:
                        self._failed_since[owner] = now
                        log.warning("node failed; its manifest is held here", extra={"owner": owner})
                    task = self.ctx.tasks.spawn(self._handle_failure(owner))
                    task.add_done_callback(lambda _t: self.ctx.watch_wakeup.set())  # the episode may be over
                    self._episodes[owner] = (task, version)
        # Moves waiting for their owner to be alive again.
        pending: dict[str, list[Move]] = {}
        for move in self.ctx.replicas.moves(undelivered=True):
            pending.setdefault(move.owner, []).append(move)
        retries = []
        for owner, moves in pending.items():
            if statuses.get(owner) != "alive" or owner in self._deliveries:
                continue
            if now < (retry := self._delivery_retry.get(owner, 0)):
                retries.append(retry - now)
                continue
            task = self.ctx.tasks.spawn(self._deliver(owner, moves))
            self._deliveries[owner] = task
            task.add_done_callback(functools.partial(self._delivered, owner))
        return min(retries, default=None)

    def _follow_statuses(self) -> tuple[dict[str, str], list[str]]:
        """Every member's status, brought up to date from the members whose status changed since the last
        tick (a tick every WATCH_TICK s read every member: O(N)), and the peers back from failed since."""
        view = self.ctx.h.view
        changed = view.statuses.since(self._statuses_version) if self._statuses_version >= 0 else None
        self._statuses_version = view.statuses.version
        if changed is None:
            was: Mapping[str, str | None] = self._statuses
            self._statuses = {n.name: n.status for n in view.nodes()}
            changed = [*self._statuses, *(n for n in was if n not in self._statuses)]
        else:
            was = {name: self._statuses.get(name) for name in changed}
            for name in changed:
                status = view.status(name)
                if status is None:
                    self._statuses.pop(name, None)
                else:
                    self._statuses[name] = status
        back = sorted({n for n in changed if n != self.ctx.name and self._statuses.get(n) == "alive"
                       and was.get(n) == "failed"})
        return self._statuses, back

    async def _elect(self, owner: str) -> _Election:
        """The newest manifest of `owner` among the holders asked, and who respawns it."""
        alive = [n for n in self.ctx.alive() if n != owner]
        ranked = holder_rank(owner, [*alive, self.ctx.name], self.ctx.flagged_nodes())
        mine = ranked.index(self.ctx.name)
        ask = [n for n in ranked[: max(mine, self.ctx.k + 2)] if n != self.ctx.name]
        own = self.ctx.replicas.get(owner)
        # Their manifest comes along only when it is newer than ours.
        path = f"/v1/local/replicas/{quote(owner, safe='')}?newer_than={own.version if own else -1}"
        answers = await asyncio.gather(*(self.ctx.ask(n, "GET", path) for n in ask))
        holders: dict[str, _Holder] = {}
        if own is not None:
            holders[self.ctx.name] = _Holder(self.ctx.flagged, owner in self.ctx.acting, own.version, own)
        for name, body in zip(ask, answers):
            if isinstance(body, dict) and isinstance(body.get("version"), int):
                holders[name] = _Holder(bool(body.get("flagged")), bool(body.get("acting")), body["version"],
                                        body.get("manifest") or {})
        newest = max((h for h in holders.values() if h.manifest), key=lambda h: h.version, default=None)
        if newest is None:
            return _Election(None, None, False)
        manifest = newest.manifest if isinstance(newest.manifest, Manifest) else Manifest.model_validate(newest.manifest)
        if own is None or manifest.version > own.version:
            self.ctx.replicas.put(manifest)  # keep the newest copy here too
        respawner = next((n for n in ranked if n in holders and holders[n].flagged), None)
        acting = holders[respawner].acting if respawner else False
        return _Election(manifest, respawner, acting, [n for n in ranked if n in holders])

    async def lookup(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Which of `ids` were placed somewhere: id → (node, workload), over every alive node and this one (a
        returning node's check, once per return: hypercore.failover.returning)."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for wid in ids:
            record = self.ctx.h.workloads.get(wid)
            if record is not None and record.state in EXISTING_STATES:
                found[wid] = (self.ctx.name, record.to_dict())
        if not ids:
            return found
        others = [n for n in self.ctx.alive() if n != self.ctx.name]
        answers = await asyncio.gather(*(self.ctx.ask(n, "POST", "/v1/local/failover/lookup", {"ids": ids}, timeout=5.0)
                                         for n in others))
        for node, body in zip(others, answers):
            for wid, workload in (body or {}).get("found", {}).items():
                if wid in ids and (wid not in found or workload.get("state") == "running"):
                    found[wid] = (node, workload)
        return found

    def local_lookup(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for wid in ids:
            record = self.ctx.h.workloads.get(wid)
            if record is not None and record.state in EXISTING_STATES:
                out[wid] = record.to_dict()
        return out

    async def _handle_failure(self, owner: str) -> None:
        backoff = Backoff(first=1.0, cap=30.0)
        while self.ctx.status(owner) == "failed":
            try:
                wait = await self._failure_round(owner)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("respawn round failed", extra={"owner": owner})
                wait = backoff.next()
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _failure_round(self, owner: str) -> float | None:
        """One look at a failed owner; seconds until the next one, or None when nothing is left to do."""
        election = await self._elect(owner)
        manifest = election.manifest
        if manifest is None:
            return None
        known = {m.original_id for m in self.ctx.replicas.moves(owner=owner)}
        todo = [e for e in manifest.workloads if e.id not in known]
        if not todo:
            return None
        since = self._failed_since.get(owner, time.monotonic())
        waited = time.monotonic() - since
        role = "respawner"
        if election.respawner != self.ctx.name:
            if waited < self.ctx.grace or (election.respawner_acting and waited < MAX_DEFER):
                return 1.0
            role = "fallback"
        # What was placed again already (by the respawner, or by us before a restart) is not looked up on every
        # alive node first (N requests a round): each respawn goes to its request id's owner, whose directory
        # answers with the copy placed before (recorded as a move, not placed twice) in O(1) requests.
        if self.ctx.status(owner) != "failed":
            return None
        log.warning("respawning the workloads of a failed node", extra={
            "owner": owner, "workloads": len(todo), "role": role, "manifest_version": manifest.version,
            "holders": ",".join(election.holders), "failed_for_s": round(waited, 1)})
        self.ctx.acting.add(owner)
        try:
            results = await asyncio.gather(*(self._respawn_one(owner, e) for e in todo), return_exceptions=True)
        finally:
            self.ctx.acting.discard(owner)
        for e, result in zip(todo, results):
            if isinstance(result, BaseException):
                log.error("respawn of a workload raised", extra={"owner": owner, "id": e.id, "error": repr(result)})
        if all(r is True for r in results):
            log.info("every workload of the failed node runs again", extra={"owner": owner, "moved": len(results)})
            return None
        return 5.0

    async def place_here(self, entry: ManifestEntry) -> Placement:
        """Place a failed node's workload again from this node, the owner of its respawn request id: once in the
        cluster, whoever asks."""
        policy: Policy | None = None
        if entry.policy is not None:
            try:
                policy = Policy(**entry.policy)
            except (ValidationError, TypeError) as exc:
                log.error("the policy a workload was placed with does not parse any more; using the cluster default",
                          extra={"id": entry.id, "error": str(exc)})
        return await self.ctx.h.place(entry.spec, policy, request_id=respawn_request_id(entry.id), owner=entry.owner)

    async def place_for(self, owner: str, entry: ManifestEntry) -> Placement:
        """`place_here`, as the respawn request id's owner asked by a holder of failed `owner`'s manifest; the
        move is recorded here too, so that it reaches `owner` even if the holder never hears the answer."""
        placement = await self.place_here(entry)
        if placement.workload is not None and placement.workload.get("id") == respawn_id(entry.id):
            self.ctx.record_move(Move(owner=owner, original_id=entry.id, new_id=respawn_id(entry.id),
                                      node=placement.node, moved_at=time.time(), by=self.ctx.name))
        return placement

    async def _place(self, owner: str, entry: ManifestEntry) -> tuple[str | None, bool]:
        """(node, already placed) of `entry`'s respawn, placed by its request id's owner, like a user's spawn:
        every holder of the manifest meets at that node's lock and placement directory (O(1) requests, not a
        lookup of every node per workload). An owner that refuses connections (alive to Serf, its API down):
        the request id's next holder, which keeps its directory entry too (as placement.forwarding does for a
        spawn). None of them answering: nothing here (a node without the request id's directory entry could
        start a second copy); the next round asks again."""
        holders = self.ctx.h.holders_of(respawn_request_id(entry.id))
        # OwnerTimeout (a HypercoreError: the next round asks again) when one did not answer in time.
        found = await first_placer(holders, self.ctx.name, lambda node: self.ctx.h.transport.request(
            node, "POST", RESPAWN_PATH, timeout=FORWARD_TIMEOUT_S,
            json_body=RespawnRequest(owner=owner, entry=entry).model_dump(mode="json")))
        if found is None:
            raise HypercoreError(f"none of the nodes that may place it ({', '.join(holders)}) could be reached")
        target, r = found
        if r is None:  # this node places it; the move is recorded by the caller, _respawn_one
            placement = await self.place_here(entry)
            workload, node, existing = placement.workload, placement.node, placement.existing
        else:
            if not r.ok:
                raise HypercoreError(f"node {target}, which places it, answered {r.status}: {r.error_message()}")
            try:
                body = r.json()
                workload, node, existing = body["workload"], body["node"], body["existing"]
            except (ValueError, KeyError, TypeError):
                workload = node = existing = None
        if not (isinstance(workload, dict) and workload.get("id") == respawn_id(entry.id)
                and isinstance(node, str) and isinstance(existing, bool)):
            raise HypercoreError(f"node {target} answered something that is not this workload's respawn")
        return node, existing

    async def _respawn_one(self, owner: str, entry: ManifestEntry) -> bool:
        async with self._sem:
            if self.ctx.status(owner) != "failed":
                return False
            try:
                node, existing = await self._place(owner, entry)
            except (NoQualifyingNode, PlacementFailed, HypercoreError) as exc:
                self.ctx.metrics.respawns.labels(result="failed").inc()
                log.warning("could not place a workload of a failed node yet; will retry",
                            extra={"owner": owner, "id": entry.id, "error": str(exc)})
                return False
            new_id = respawn_id(entry.id)
            self.ctx.record_move(Move(owner=owner, original_id=entry.id, new_id=new_id, node=node,
                                   moved_at=time.time(), by=self.ctx.name))
            if existing:  # another holder of the manifest placed it first: recorded, not counted twice
                log.info("a workload of a failed node was already placed again", extra={
                    "owner": owner, "id": entry.id, "new_id": new_id, "node": node})
                return True
            self.ctx.metrics.respawns.labels(result="placed").inc()
            if self.ctx.h.observe is not None:
                self.ctx.h.observe(owner, False, "workload lost with its node")
            log.info("respawned a workload of a failed node", extra={
                "owner": owner, "id": entry.id, "new_id": new_id, "node": node})
            return True

    async def _deliver(self, owner: str, moves: list[Move]) -> None:
        body = None
        if self.ctx.h.transport.reachable(owner):
            body = await self.ctx.ask(owner, "POST", "/v1/local/failover/moved",
                                   {"moves": [m.model_dump(mode="json") for m in moves]}, timeout=60.0)
        if isinstance(body, dict):
            self.ctx.replicas.mark_delivered(m.original_id for m in moves)
            self.ctx.dirty = True
            log.info("told a returning node which of its workloads moved",
                     extra={"owner": owner, "moves": len(moves), "results": json.dumps(body.get("results", {}))})
        else:
            self._delivery_retry[owner] = time.monotonic() + DELIVERY_RETRY

