"""A node's side of the placement directory (hypercore.placement.directory): find, claim, settle, collect.

The scheduler, holding a request id's lock, calls:
- `existing(key)` first: this node's entry, and the one or two nodes it
  names, asked for a copy (0–2 requests; none when there is no entry);
- `claim(key, id, trying)` before each attempt: the entry, naming the nodes
  that may start the workload, written here and on the other holders
  (2 requests) *before* the attempt goes out, so that whoever places the
  request id after this node (a buddy when this node dies, a new owner when a
  node joins above it) knows which node to ask. A holder that keeps an entry
  this node did not know answers with it instead; its nodes are asked first;
- `settle(key, id, state, node)` after: written here at once. The other
  holders hear of it with the next push to them (a later claim, or the flush
  every FLUSH_S), and only if it changes the nodes they would ask: a workload
  placed on the node its claim named needs no second write there, so the
  usual spawn costs no request after its attempt.
Entries are collected (`sweep`) once the nodes they name no longer have the
workload (removed by `cluster remove` or `--gc-after`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from hypercore.loops import periodic
from hypercore.membership.view import ClusterView
from hypercore.placement.directory import (
    MAX_TRYING,
    MAX_WRITES,
    DirectoryEntry,
    DirectoryPush,
    DirectoryStore,
    DirectoryWrite,
    holders_of,
    holders_of_workload,
    next_version,
    pointer_of,
)
from hypercore.placement.ids import derived_from_request, node_set
from hypercore.transport import PeerUnreachable, Transport
from hypercore.workload import EXISTING_STATES

log = logging.getLogger("hypercore.directory")

FLUSH_S: Final = 5.0  # settled entries reach the other holders at least this often
SWEEP_S: Final = 60.0  # how often old entries are checked against the nodes they name
KEEP_S: Final = 600.0  # an entry is at least this old before a sweep may drop it
PUSH_TIMEOUT: Final = 5.0  # a claim waits this long for a holder (a frozen one delays the spawn by as much)
LOOKUP_TIMEOUT: Final = 2.0  # a holder asked where a workload runs (a user waits; every node is asked after)
COPY_TIMEOUT: Final = 10.0  # a node the entry names is worth waiting for: without its answer, a second copy
CLAIM_ROUNDS: Final = 3  # a claim met by entries it did not know: look, write again, at most this often
PUSH_PATH: Final = "/v1/local/directory"
ENTRIES_PATH: Final = "/v1/local/entries"  # + /{workload id}: the entry held for the request of that workload
MAX_PENDING: Final = 10 * MAX_WRITES  # per holder: outcomes not yet delivered (a holder alive but silent)


@dataclass(frozen=True)
class Copy:
    """A copy of a request's workload that exists (placed: pending, running or finished) on `node`."""

    node: str
    workload: dict[str, Any]


class Directory:
    def __init__(self, *, node_name: str, data_dir: Path, view: ClusterView, transport: Transport,
                 local_record: Callable[[str], dict[str, Any] | None]) -> None:
        """`local_record(workload id)`: this node's record of it, as /v1/local/workloads/{id} would answer."""
        self.name = node_name
        self.view = view
        self.transport = transport
        self.store = DirectoryStore(data_dir)
        self._local_record = local_record
        # holder → request id → the newest write of ours it has not confirmed yet
        self._pending: defaultdict[str, dict[str, DirectoryWrite]] = defaultdict(dict)

    def close(self) -> None:
        self.store.close()

    def holders(self, key: str) -> list[str]:
        return holders_of(key, self.view.peers())

    # -- looking ---------------------------------------------------------------------

    async def find_copy(self, entry: DirectoryEntry) -> tuple[Copy | None, list[str]]:
        """A copy on a node `entry` names, asked one at a time (usually one); and the named nodes that did not answer."""
        silent: list[str] = []
        for node in entry.maybe_holding():
            if node == self.name:
                record = self._local_record(entry.id)
                if record is not None and record.get("state") in EXISTING_STATES:
                    return Copy(node, record), silent
                continue
            try:
                r = await self.transport.request(node, "GET", f"/v1/local/workloads/{entry.id}", timeout=COPY_TIMEOUT)
            except PeerUnreachable:
                silent.append(node)
                continue
            if r.status == 404:
                continue
            try:
                body = r.json() if r.status == 200 else None
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("state") in EXISTING_STATES:
                return Copy(node, body), silent
            if body is None:
                silent.append(node)
        return None, silent

    async def entry_for(self, workload_id: str, timeout: float = LOOKUP_TIMEOUT) -> DirectoryEntry | None:
        """The entry of the request whose workload id is `workload_id`, from its holders, first that has one.

        Usually one request (none when this node is the first holder and has
        it). None for a workload that no holder has an entry for: one spawned
        without a request id (a random id, not derived from one: not asked),
        one placed while its request id's owner could not be reached, or one
        whose entry was collected.
        """
        if not derived_from_request(workload_id):
            return None
        for holder in holders_of_workload(workload_id, self.view.peers()):
            if holder == self.name:
                entry = self.store.by_workload(workload_id)
            else:
                try:
                    r = await self.transport.request(holder, "GET", f"{ENTRIES_PATH}/{workload_id}", timeout=timeout)
                    entry = DirectoryEntry.model_validate_json(r.text) if r.status == 200 else None
                except (PeerUnreachable, ValidationError):
                    continue
            if entry is not None and entry.id == workload_id:  # an answer about another workload is no answer
                return entry
        return None

    async def existing(self, key: str) -> tuple[Copy | None, list[str]]:
        """A copy of `key`'s workload named by this node's entry; and the named nodes that did not answer."""
        entry = self.store.get(key)
        if entry is None:
            return None, []
        copy, silent = await self.find_copy(entry)
        if copy is not None and (entry.state != "placed" or entry.node != copy.node):
            self.settle(key, entry.id, "placed", node=copy.node)
        return copy, silent

    # -- writing -----------------------------------------------------------------------

    def _record(self, key: str, workload_id: str, state: str, *, node: str | None = None,
                trying: Iterable[str] = (), above: int = 0) -> DirectoryWrite:
        """Write a new version of `key`'s entry here (durably) and return it as a write for the other holders."""
        held = self.store.get(key)
        base = max(held.version if held else 0, above)
        names = list(dict.fromkeys(trying))[-MAX_TRYING:]
        entry = DirectoryEntry(key=key, id=workload_id, state=state, node=node, trying=names,  # type: ignore[arg-type]
                               version=next_version(base), by=self.name, updated_at=time.time())
        self.store.write(entry, base=base)
        return DirectoryWrite(entry=entry, base=base)

    async def claim(self, key: str, workload_id: str, trying: list[str]) -> Copy | None:
        """Before an attempt: record that `trying` may start the workload, here and on the other holders.

        Returns a copy when a holder kept an entry this node did not know and
        a node it names has one: then nothing may be attempted. A holder that
        cannot be reached is passed over (docs/placement-protocol.md, Limits).
        """
        above = 0
        others, pointer = self._targets(key)
        for _ in range(CLAIM_ROUNDS):
            write = self._record(key, workload_id, "placing", trying=trying, above=above)
            if pointer is not None:
                self._queue(pointer, write)  # where a lookup by workload id asks: with the next flush
            answers = await asyncio.gather(*(self._push_with_pending(h, write) for h in others))
            unknown = [held for answer in answers for w, stored, held in answer  # newer than what this node knew
                       if w.entry.key == key and not stored and held is not None and held.version > w.base]
            if not unknown:
                return None
            newest = max(unknown, key=lambda e: e.version)
            log.info("request id already in the directory of another node; looking there first",
                     extra={"key": key[:80], "by": newest.by, "state": newest.state})
            copy, silent = await self.find_copy(newest)
            if copy is not None:
                self.settle(key, workload_id, "placed", node=copy.node, above=newest.version)
                return copy
            trying = [*silent, *trying]  # they may still hold one: name them too
            above = newest.version
        log.warning("directory writes kept meeting newer entries; placing anyway", extra={"key": key[:80]})
        return None

    def settle(self, key: str, workload_id: str, state: str, *, node: str | None = None,
               trying: Iterable[str] = (), above: int = 0) -> None:
        """The outcome: written here now; on the other holders with the next push to them, and only when it
        changes which nodes they would ask (placed on the very node the claim named changes nothing)."""
        claimed = self.store.get(key)
        write = self._record(key, workload_id, state, node=node, trying=trying, above=above)
        if claimed is not None and set(claimed.maybe_holding()) == set(write.entry.maybe_holding()):
            return
        others, pointer = self._targets(key)
        for holder in [*others, *([pointer] if pointer else [])]:
            self._queue(holder, write)

    def _targets(self, key: str) -> tuple[list[str], str | None]:
        """`key`'s holders other than this node, and the node that keeps a copy of a home's entry for lookups by
        workload id (placement.directory.pointer_of), from one read of the members."""
        peers = node_set(self.view.peers())
        pointer = pointer_of(key, peers)
        return [h for h in holders_of(key, peers) if h != self.name], pointer if pointer != self.name else None

    def _queue(self, holder: str, write: DirectoryWrite) -> None:
        """`write` goes to `holder` with the next push to it (a claim there, or the flush every FLUSH_S)."""
        queued = self._pending[holder]
        queued.pop(write.entry.key, None)
        queued[write.entry.key] = write  # newest last: the oldest go first when a silent holder's queue is full
        while len(queued) > MAX_PENDING:
            queued.pop(next(iter(queued)))

    # -- between holders ---------------------------------------------------------------------

    async def _push_with_pending(self, holder: str, write: DirectoryWrite) -> list[tuple[DirectoryWrite, bool, DirectoryEntry | None]]:
        queued = self._pending.get(holder, {})
        extra = [w for k, w in list(queued.items())[: MAX_WRITES - 1] if k != write.entry.key]
        return await self._push(holder, [write, *extra])

    async def _push(self, holder: str, writes: list[DirectoryWrite]) -> list[tuple[DirectoryWrite, bool, DirectoryEntry | None]]:
        """Send `writes` to `holder`: [(write, stored, entry held there)]; [] when it did not answer."""
        body = DirectoryPush(writes=writes).model_dump(mode="json")
        try:
            r = await self.transport.request(holder, "PUT", PUSH_PATH, json_body=body, timeout=PUSH_TIMEOUT)
        except PeerUnreachable as exc:
            log.debug("directory push failed", extra={"holder": holder, "error": str(exc)})
            return []
        if r.status != 200:
            log.warning("holder refused directory writes", extra={"holder": holder, "status": r.status,
                                                                   "error": r.error_message()})
            if 400 <= r.status < 500:  # it will not take them later either: do not send them again
                self._forget(holder, writes)
            return []
        out = []
        try:
            results = r.json()["results"]
            for write, result in zip(writes, results):
                held = DirectoryEntry.model_validate(result["held"]) if result.get("held") else None
                out.append((write, bool(result.get("stored")), held))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("holder answered directory writes with something unexpected",
                        extra={"holder": holder, "error": str(exc)[:200]})
            return []
        self._forget(holder, [w for w, _stored, _held in out])  # stored, or a newer one is held there: delivered
        return out

    def _forget(self, holder: str, writes: list[DirectoryWrite]) -> None:
        queued = self._pending.get(holder)
        for write in writes:
            if queued is not None and queued.get(write.entry.key) is write:
                del queued[write.entry.key]

    async def flush(self) -> None:
        """Push what the other holders have not confirmed: one request per holder, whatever the number of entries."""
        alive = set(self.view.peers())
        for holder in list(self._pending):
            if holder not in alive:
                del self._pending[holder]  # gone: a holder that comes back is no longer owed these
        await asyncio.gather(*(self._push(h, list(q.values())[:MAX_WRITES]) for h, q in list(self._pending.items()) if q))

    def accept(self, caller: str, writes: list[DirectoryWrite], *, check_caller: bool = True) -> list[dict[str, Any]]:
        """Writes another node pushed here (PUT /v1/local/directory): each kept only if `caller` wrote it
        and is one of its request id's holders under this node's view."""
        alive = node_set(self.view.peers())  # ranked for every write below: seeds hashed once
        out: list[dict[str, Any]] = []
        for write in writes:
            entry = write.entry
            refused = None
            if check_caller and entry.by != caller:
                refused = f"entry written by {entry.by}, sent by {caller}"
            elif check_caller and caller not in holders_of(entry.key, alive):
                refused = f"node {caller} is not a holder of this request id"
            if refused is not None:
                # With what is held here: a writer this node does not count as a holder may be one whose view is
                # ahead of this node's (a home that just came back), and must look at the nodes this entry names
                # before it places (Directory.claim), not place blind.
                held = self.store.get(entry.key) if entry.by == caller else None
                out.append({"key": entry.key, "stored": False, "refused": refused,
                            "held": held.model_dump(mode="json") if held is not None else None})
                continue
            stored, held = self.store.write(entry, write.base)
            out.append({"key": entry.key, "stored": stored,
                        "held": held.model_dump(mode="json") if held is not None else None})
        return out

    # -- collecting -----------------------------------------------------------------------

    async def sweep(self, keep_s: float = KEEP_S) -> int:
        """Drop entries older than `keep_s` whose nodes all answer that they no longer have the workload.

        One batched lookup per node named (POST /v1/local/failover/lookup), at
        most MAX_WRITES entries per sweep. Returns how many were dropped.
        """
        entries = self.store.older_than(time.time() - keep_s)
        by_node: defaultdict[str, list[DirectoryEntry]] = defaultdict(list)
        for entry in entries:
            for node in entry.maybe_holding():
                by_node[node].append(entry)

        async def ask(node: str, ids: list[str]) -> tuple[str, set[str] | None]:
            if node == self.name:
                return node, {i for i in ids if (r := self._local_record(i)) and r.get("state") in EXISTING_STATES}
            try:
                r = await self.transport.request(node, "POST", "/v1/local/failover/lookup", json_body={"ids": ids},
                                                 timeout=10.0)
                return node, set(r.json()["found"]) if r.status == 200 else None
            except (PeerUnreachable, ValueError, KeyError, TypeError):
                return node, None

        answers = dict(await asyncio.gather(*(ask(n, [e.id for e in es]) for n, es in by_node.items())))
        dropped = 0
        now = time.time()
        for entry in entries:
            named = entry.maybe_holding()
            if any(answers.get(n) is None or entry.id in answers[n] for n in named):
                self.store.touch(entry.key, entry.version, now)  # still there (or unknown): look again later
                continue
            dropped += self.store.delete(entry.key, entry.version)
        if dropped:
            log.info("dropped directory entries of workloads that are gone", extra={"count": dropped})
        return dropped

    async def run(self) -> None:
        await asyncio.gather(periodic(FLUSH_S, self.flush, what="directory flush", log=log),
                             periodic(SWEEP_S, self.sweep, what="directory sweep", log=log))
