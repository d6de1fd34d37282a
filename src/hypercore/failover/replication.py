"""Replication: this node's manifest, kept on its k buddies.

The manifest lists the workloads this node accepted that are pending or
running (plus the moves it knows of), under a version that only grows. It
is rebuilt when the registry changes (the store tells; SQLite's data_version
catches writes it did not see) and pushed to each buddy when it changed (a change
COALESCE_S after it is first seen, at most every PUSH_MIN_INTERVAL per buddy,
so a spawn costs one push per buddy and a burst one per interval) and every REFRESH_INTERVAL anyway. The
loop sleeps between: nothing runs while nothing changes and nothing is due.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypercore.failover.context import Context
from hypercore.failover.model import (
    COALESCE_S,
    PUSH_MIN_INTERVAL,
    PUSH_RETRY,
    REFRESH_INTERVAL,
    REPLICA_TTL,
    ASK_TIMEOUT,
    Manifest,
    ManifestEntry,
    buddies_of,
)
from hypercore.transport import PeerUnreachable
from hypercore.workload import LIVE_STATES

log = logging.getLogger("hypercore.failover")


@dataclass
class _Buddy:
    acked: int = -1  # newest version it confirmed
    last_ok: float = float("-inf")  # monotonic time of its last confirmation
    next_try: float = 0.0


class Replicator:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._registry: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._version_floor = 0
        self.manifest: Manifest | None = None
        self._manifest_body: dict[str, Any] | None = None
        self._digest = ""
        self.buddies: dict[str, _Buddy] = {}
        self._pushes: dict[str, Any] = {}
        self._started = time.monotonic()
        self._last_gc = time.monotonic()
        self._built_at = float("-inf")
        self._dirty_since: float | None = None  # when a change not yet in the manifest was first seen

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def _registry_changed(self) -> bool:
        """Whether the workload registry was written since the last call (SQLite's data_version)."""
        if self._registry is None:
            self._registry = sqlite3.connect(self.ctx.h.workloads.path, check_same_thread=False, isolation_level=None)
        version = self._registry.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _refresh_manifest(self) -> None:
        workloads = [
            ManifestEntry(id=r.id, spec=r.spec, policy=r.policy, request_id=r.request_id, state=r.state.value,  # type: ignore[arg-type]
                          owner=r.owner)
            for r in self.ctx.h.workloads.list(states=LIVE_STATES)
        ]
        moves = self.ctx.replicas.moves()
        content = json.dumps([[w.model_dump(mode="json") for w in workloads], [m.model_dump(mode="json") for m in moves]],
                             sort_keys=True)
        digest = hashlib.sha256(content.encode()).hexdigest()
        if self.manifest is not None and digest == self._digest and self.manifest.version > self._version_floor:
            return
        version = self.ctx.replicas.next_version(self._version_floor)
        self.manifest = Manifest(owner=self.ctx.name, version=version, generated_at=time.time(), workloads=workloads,
                                 moves=moves)
        self._manifest_body = self.manifest.model_dump(mode="json")
        self._digest = digest
        log.debug("manifest changed", extra={"version": version, "workloads": len(workloads), "moves": len(moves)})

    def tick(self) -> float:
        """Rebuild and push what is due; returns the seconds until the next thing falls due."""
        ctx = self.ctx
        now = time.monotonic()
        if self._registry_changed():
            ctx.dirty = True
        waits: list[float] = []
        if ctx.dirty and self._dirty_since is None:
            self._dirty_since = now
        if self.manifest is None or (ctx.dirty and now >= self._rebuild_at()):
            ctx.dirty = False
            self._dirty_since = None
            self._built_at = now
            self._refresh_manifest()
        elif ctx.dirty:
            waits.append(self._rebuild_at() - now)
        buddies = buddies_of(ctx.name, ctx.alive(), ctx.k, ctx.flagged_nodes())
        for gone in set(self.buddies) - set(buddies):
            del self.buddies[gone]
        assert self.manifest is not None
        for buddy in buddies:
            state = self.buddies.setdefault(buddy, _Buddy())
            if buddy in self._pushes:
                continue  # its end wakes this loop
            if state.acked >= self.manifest.version and now - state.last_ok < REFRESH_INTERVAL:
                waits.append(state.last_ok + REFRESH_INTERVAL - now)
            elif now < state.next_try:
                waits.append(state.next_try - now)
            else:
                state.next_try = now + PUSH_MIN_INTERVAL
                task = ctx.tasks.spawn(self._push(buddy, self.manifest.version, self._manifest_body))
                self._pushes[buddy] = task
                task.add_done_callback(functools.partial(self._pushed, buddy))
        if now - self._last_gc >= REFRESH_INTERVAL:
            self._last_gc = now
            self._collect_garbage()
        waits.append(self._last_gc + REFRESH_INTERVAL - now)
        return max(0.01, min(waits))

    def _rebuild_at(self) -> float:
        """When a change is rebuilt into the manifest: once it is COALESCE_S old (a spawn writes the registry
        twice, pending then running, ≈ 50 ms apart: one push instead of two per buddy), and at most every
        PUSH_MIN_INTERVAL (a burst of spawns)."""
        return max(self._built_at + PUSH_MIN_INTERVAL, (self._dirty_since or 0.0) + COALESCE_S)

    def _pushed(self, buddy: str, _task: Any) -> None:
        self._pushes.pop(buddy, None)
        self.ctx.replication_wakeup.set()

    async def _push(self, buddy: str, version: int, body: dict[str, Any] | None) -> None:
        ctx = self.ctx
        state = self.buddies.get(buddy) or _Buddy()
        try:
            r = await ctx.h.transport.request(buddy, "PUT", f"/v1/local/replicas/{quote(ctx.name, safe='')}",
                                              json_body=body, timeout=ASK_TIMEOUT)
        except PeerUnreachable as exc:
            ctx.metrics.pushes.labels(outcome="unreachable").inc()
            state.next_try = time.monotonic() + PUSH_RETRY
            log.debug("manifest push failed", extra={"buddy": buddy, "error": str(exc)})
            return
        if r.status != 200:
            ctx.metrics.pushes.labels(outcome="refused").inc()
            state.next_try = time.monotonic() + PUSH_RETRY
            log.warning("buddy refused this node's manifest", extra={"buddy": buddy, "status": r.status,
                                                                     "error": r.error_message()})
            return
        ctx.metrics.pushes.labels(outcome="ok").inc()
        try:
            held = int(r.json().get("stored_version", version))
        except (ValueError, TypeError, AttributeError):
            held = version
        if held > version:
            # The buddy holds a newer version than ours (our replicas file was lost): jump above it.
            self._version_floor = max(self._version_floor, held)
            ctx.dirty = True
            return
        state.acked = max(state.acked, version)
        state.last_ok = time.monotonic()

    def _collect_garbage(self) -> None:
        """Drop replicas of owners that are not failed and stopped pushing here (no longer our buddy)."""
        ctx = self.ctx
        now = time.time()
        held = 0
        for owner, _version, received_at in ctx.replicas.owners():
            if (ctx.status(owner) != "failed" and now - received_at > REPLICA_TTL
                    and time.monotonic() - self._started > REPLICA_TTL):
                ctx.replicas.delete(owner)
                continue
            held += 1
        ctx.metrics.held.set(held)
        if ctx.replicas.prune_moves(now):
            ctx.dirty = True
