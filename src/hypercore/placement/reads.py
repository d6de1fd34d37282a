"""Reading across the cluster: the same GET to every reachable node at once."""

from __future__ import annotations

from typing import Any

from hypercore.errors import HypercoreError
from hypercore.identity.tokens import User
from hypercore.membership.view import ClusterView
from hypercore.transport import PeerUnreachable, Transport
from hypercore.workload import EXISTING_STATES


class ClusterReads:
    def __init__(self, view: ClusterView, transport: Transport) -> None:
        self.view = view
        self.transport = transport

    async def gather(self, path: str, timeout: float = 5.0, user: User | None = None,
                     nodes: list[str] | None = None) -> list[tuple[str, Any]]:
        """GET `path` from every reachable node (this one included), or from `nodes` only, concurrently:
        [(node, json or error)] (a name that is no alive member: its error).

        With `user`, each node answers as it would answer that user.
        """
        out: list[tuple[str, Any]] = []
        asked = self.view.peers() if nodes is None else nodes
        for node, r in await self.transport.gather(asked, "GET", path, timeout=timeout, user=user):
            if isinstance(r, PeerUnreachable):
                out.append((node, r))
                continue
            try:
                out.append((node, r.json() if r.status == 200 else HypercoreError(f"HTTP {r.status}: {r.error_message()}")))
            except ValueError as exc:
                out.append((node, HypercoreError(f"answer is not JSON ({exc})")))
        return out

    async def live_copy(self, workload_id: str) -> tuple[str, dict[str, Any]] | None:
        """A copy of `workload_id` that exists on some node (placed: pending, running or finished), or None."""
        for node, result in await self.gather(f"/v1/local/workloads/{workload_id}"):
            if not isinstance(result, Exception) and result.get("state") in EXISTING_STATES:
                return node, result
        return None
