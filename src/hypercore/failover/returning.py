"""Return: a node that comes back stops its old copies of workloads that were moved meanwhile.

It learns of moves three ways: at start-up it asks its buddies for moves and
looks up, on every alive node, the respawn id of each workload it still
runs; when it sees peers come back from `failed` (a healed partition looks
like that from the inside) it asks its buddies again; and every node holding
an undelivered move pushes it to the owner as soon as the owner is alive
again (hypercore.failover.respawn), until the owner acknowledges it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from pydantic import ValidationError

from hypercore.failover.context import Context
from hypercore.failover.model import Move, holder_rank, moved_reason, respawn_id
from hypercore.workload import LIVE_STATES

log = logging.getLogger("hypercore.failover")

STARTUP_WAIT_S = 60.0  # how long after a start the node waits for peers to ask


class Returner:
    def __init__(self, ctx: Context, lookup: Callable[[list[str]], Awaitable[dict[str, tuple[str, dict]]]]) -> None:
        self.ctx = ctx
        self._lookup = lookup  # which of these workload ids exist somewhere: id → (node, workload)
        self._stopping: set[str] = set()  # old copies being stopped now

    async def startup_check(self) -> None:
        """After a (re)start: once peers are visible, find out what moved while this node was away."""
        deadline = time.monotonic() + STARTUP_WAIT_S
        while time.monotonic() < deadline:
            if any(n != self.ctx.name for n in self.ctx.alive()):
                await asyncio.sleep(1.0)  # let the view fill in
                await self.check_moved("start", fan_out=True)
                return
            await asyncio.sleep(0.5)

    async def check_moved(self, reason: str, fan_out: bool) -> list[str]:
        """Ask the buddies (and, with `fan_out`, every alive node) whether workloads of ours moved; stop those."""
        ctx = self.ctx
        mine = ctx.h.workloads.list(states=LIVE_STATES)
        if not mine:
            return []
        moves: dict[str, Move] = {}
        ask = holder_rank(ctx.name, ctx.alive(), ctx.flagged_nodes(), ctx.k + 2)
        path = f"/v1/local/failover/moves/{quote(ctx.name, safe='')}"
        answers = await asyncio.gather(*(ctx.ask(n, "GET", path) for n in ask))
        for body in answers:
            for raw in (body or {}).get("moves", []):
                with contextlib.suppress(ValidationError):
                    move = Move.model_validate(raw)
                    if move.owner == ctx.name:
                        moves.setdefault(move.original_id, move)
        if fan_out:
            ids = {respawn_id(r.id): r.id for r in mine}
            for new_id, (node, _w) in (await self._lookup(list(ids))).items():
                moves.setdefault(ids[new_id], Move(owner=ctx.name, original_id=ids[new_id], new_id=new_id, node=node,
                                                   moved_at=time.time(), by=node))
        live = {r.id for r in mine}
        todo = [m for m in moves.values() if m.original_id in live]
        results = await asyncio.gather(*(self.apply_move(m) for m in todo))
        stopped = [m.original_id for m, r in zip(todo, results) if r == "stopped"]
        log.info("checked whether workloads moved while this node was failed",
                 extra={"reason": reason, "running": len(mine), "moved": len(stopped), "asked": ",".join(ask)})
        return stopped

    async def apply_move(self, move: Move) -> str:
        """Stop this node's old copy of a moved workload: "stopped", "unknown", "finished" or "ignored"."""
        ctx = self.ctx
        if move.owner != ctx.name or move.new_id == move.original_id:
            return "ignored"
        record = ctx.h.workloads.get(move.original_id)
        if record is None:
            return "unknown"
        if record.state.finished or move.original_id in self._stopping:
            return "finished"  # or being stopped for the same move, told by another node (respawner and owner)
        self._stopping.add(move.original_id)
        try:
            await ctx.h.stop(move.original_id, moved_reason(move.node, move.new_id))
        finally:
            self._stopping.discard(move.original_id)
        ctx.metrics.moved_away.inc()
        log.warning("stopped a workload that was moved while this node was failed", extra={
            "id": move.original_id, "new_id": move.new_id, "node": move.node, "by": move.by})
        return "stopped"

    def moves_about(self, owner: str) -> list[Move]:
        """Moves of `owner`'s workloads known here: made here, or in manifests other nodes replicated here."""
        seen: dict[str, Move] = {m.original_id: m for m in self.ctx.replicas.moves(owner=owner)}
        for move in self.ctx.replicas.moves_in_replicas(owner):
            seen.setdefault(move.original_id, move)
        return sorted(seen.values(), key=lambda m: (m.moved_at, m.original_id))
