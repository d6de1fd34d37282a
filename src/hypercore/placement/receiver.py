"""The chosen node's half of the placement protocol.

An attempt carries a deadline; a node never starts a workload whose deadline
already passed. A start that *finishes* after the deadline (the node was slow
or frozen) may have been placed elsewhere meanwhile, so the node asks the
origin whether the placement is still its own, and stops its copy if not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Histogram

from hypercore.loops import TaskSet
from hypercore.placement.model import DeadlinePassed
from hypercore.placement.reads import ClusterReads
from hypercore.runtime.base import RuntimeRefused
from hypercore.runtime.manager import WorkloadManager
from hypercore.transport import PeerUnreachable, Transport
from hypercore.workload import LocalSpawnRequest

log = logging.getLogger("hypercore.scheduler")

ORIGIN_ASKS = 30  # how many times (a second apart) a late node asks an origin that is still placing


class Receiver:
    def __init__(self, *, node_name: str, manager: WorkloadManager | None, transport: Transport, reads: ClusterReads,
                 tasks: TaskSet, start_seconds: Histogram | None = None) -> None:
        """`start_seconds` (labelled by capability) hears how long each workload took to start here."""
        self.node_name = node_name
        self.start_seconds = start_seconds
        self.manager = manager
        self.transport = transport
        self.reads = reads
        self.tasks = tasks

    async def accept(self, req: LocalSpawnRequest) -> dict[str, Any]:
        """Run a placement attempt on this node (POST /v1/local/workloads, or directly for ourselves)."""
        if req.deadline is not None and time.time() > req.deadline:
            raise DeadlinePassed("placement deadline passed before this node could start the workload")
        if self.manager is None:
            raise RuntimeRefused(f"node {self.node_name} runs no workloads")
        arrived = time.perf_counter()
        record = await self.manager.accept(req.spec, workload_id=req.id, request_id=req.request_id, policy=req.policy,
                                           owner=req.owner)
        if self.start_seconds is not None:
            self.start_seconds.labels(capability=req.spec.capability).observe(time.perf_counter() - arrived)
        if req.deadline is not None and time.time() > req.deadline:
            manager = self.manager

            async def stop(reason: str) -> None:
                log.warning("stopping a late copy", extra={"id": req.id, "reason": reason})
                await manager.stop(req.id, reason=reason)

            self.tasks.spawn(self.confirm_late_start(req.id, req.origin, stop))
        return record.to_dict()

    async def confirm_late_start(self, workload_id: str, origin: str | None,
                                 stop: Callable[[str], Awaitable[None]]) -> None:
        """This node finished starting `workload_id` after the deadline: keep it only if it is ours.

        `stop(reason)` stops the local copy. The origin knows where the
        placement went; if it cannot be asked, any other live copy wins.
        """
        for _ in range(ORIGIN_ASKS):
            verdict = await self._ask_origin(workload_id, origin)
            if verdict == "ours":
                return
            if verdict == "placing":
                await asyncio.sleep(1.0)
                continue
            if verdict is not None:
                await stop(verdict)
                return
            # Origin unreachable: another running copy means this one is the extra.
            for node, result in await self.reads.gather(f"/v1/local/workloads/{workload_id}"):
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
