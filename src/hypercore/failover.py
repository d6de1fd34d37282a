"""Node failover: what a failed node ran is placed again, once, and its old copies go away.

Three parts (docs/cluster.md, "Failover", says the same for users):

Replication. Every node keeps k=2 *buddies* — the alive nodes ranked highest
by rendezvous hashing for its name (sha256(owner + "\\0" + candidate)), nodes
that carry the flag first (Serf tag `fo=1`) — supplied with its *manifest*:
the workloads it accepted that are pending or running (id, spec, policy,
request id, state), plus the moves it knows of (see below). The manifest carries a version that only grows (persisted, and at
least the wall clock in ms); it is pushed when it changes (at most every
0.5 s per buddy) and every 10 s anyway. A buddy keeps the newest version per
owner in `<data_dir>/replicas.sqlite3` and ignores older ones. A node thus
sends k pushes and holds about k manifests, whatever the size of the cluster.

Respawn (`--respawn-on-node-failure`). When Serf marks an owner `failed`, each
flagged node that holds its manifest ranks the alive nodes by the same hash
for the owner's name and asks the ones ranked above it (and the top k+2) for
their copy. The highest-ranked flagged holder is the *respawner*: it acts at
once. Every other flagged holder waits a grace period (10 s), then checks by
fan-out which workloads were placed again and places only the missing ones
(and not while the respawner says it is still placing). Placing means
`scheduler.place(spec, original policy, request_id="respawn:<original id>")`,
so the new copy's id is fixed by the old id and a second placement of the same
workload yields the same workload. Each placement is recorded as a *move*
(owner, original id → new id, node) in replicas.sqlite3, which goes into this
node's own manifest, so that its buddies know it too.

Return. A node that comes back stops its old copies of moved workloads and
marks them STOPPED with "moved to <node> as <new id> while this node was
failed". It learns of moves three ways: at start-up it asks the nodes ranked
highest for its name (its buddies) for moves and looks up, on every alive node,
the respawn id of each workload it still runs; when it sees peers come back
from `failed` (a healed partition looks like that from the inside) it asks its
buddies again; and every node holding an undelivered move pushes it to the
owner as soon as the owner is alive again, until the owner acknowledges it.
Workloads stopped on purpose are not in any manifest, so they never come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from urllib.parse import quote

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hypercore.transport import PeerUnreachable
from hypercore.errors import HypercoreError
from hypercore.policy import NoQualifyingNode, Policy
from hypercore.scheduler import PlacementFailed, rendezvous_rank, workload_id_for
from hypercore.workload import WorkloadSpec, WorkloadState

if TYPE_CHECKING:
    from hypercore.agent import NodeAgent

log = logging.getLogger("hypercore.failover")

REPLICAS_FILENAME: Final = "replicas.sqlite3"
FLAG_TAG: Final = "fo"  # Serf tag "fo=1": this node carries --respawn-on-node-failure
FLAGS_REFRESH: Final = 2.0
K: Final = 2  # buddies per node
TICK: Final = 0.25  # replication loop: how often the registry is checked for changes
WATCH_TICK: Final = 0.5  # membership watch loop
PUSH_MIN_INTERVAL: Final = 0.5  # per buddy, between two pushes
REFRESH_INTERVAL: Final = 10.0  # a buddy hears from its owner at least this often
PUSH_RETRY: Final = 2.0  # after a failed push
ASK_TIMEOUT: Final = 3.0
GRACE: Final = 10.0  # how long a holder that is not the respawner waits before it checks
MAX_DEFER: Final = 60.0  # how long it defers to a respawner that says it is still placing
REPLICA_TTL: Final = 60.0  # a replica of an owner that is not failed and stopped pushing is dropped after
MOVE_KEEP_DELIVERED: Final = 3600.0
MOVE_KEEP_UNDELIVERED: Final = 7 * 86400.0
DELIVERY_RETRY: Final = 5.0
CHECK_DEBOUNCE: Final = 10.0
RESPAWN_CONCURRENCY: Final = 16

_UUID: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_LIVE: Final = (WorkloadState.PENDING, WorkloadState.RUNNING)
# States in which a workload counts as placed (the scheduler's find() agrees).
_EXISTS: Final = frozenset({"pending", "running", "exited", "stopped"})

NodeName = Annotated[str, Field(min_length=1, max_length=256)]
WorkloadId = Annotated[str, Field(pattern=_UUID)]


# -- the pure parts ---------------------------------------------------------------


def holder_rank(owner: str, alive: Iterable[str], flagged: Iterable[str] = ()) -> list[str]:
    """The alive nodes other than `owner` in the order they hold its manifest.

    Rendezvous order, with nodes that carry --respawn-on-node-failure first:
    a node's buddies are the nodes that can respawn its workloads whenever
    there are enough of them. When every node (or none) carries the flag, this
    is the plain rendezvous order.
    """
    ranked = [n for n in rendezvous_rank(owner, alive) if n != owner]
    flags = set(flagged)
    return [n for n in ranked if n in flags] + [n for n in ranked if n not in flags]


def buddies_of(owner: str, alive: Iterable[str], k: int = K, flagged: Iterable[str] = ()) -> list[str]:
    """The k nodes that hold `owner`'s manifest, among the alive nodes."""
    return holder_rank(owner, alive, flagged)[:k]


def respawn_request_id(original_id: str) -> str:
    return f"respawn:{original_id}"


def respawn_id(original_id: str) -> str:
    """The workload id a respawn of `original_id` gets, wherever it is placed."""
    return workload_id_for(respawn_request_id(original_id))


def moved_reason(node: str | None, new_id: str) -> str:
    return f"moved to {node or 'another node'} as {new_id} while this node was failed"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: WorkloadId
    spec: WorkloadSpec
    policy: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, max_length=256)
    state: Literal["pending", "running"]
    owner: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")  # the user it runs for


class Move(BaseModel):
    """A workload of `owner` placed again while `owner` was failed."""

    model_config = ConfigDict(extra="forbid")

    owner: NodeName
    original_id: WorkloadId
    new_id: WorkloadId
    node: str | None = Field(default=None, max_length=256)  # where the new copy went
    moved_at: float
    by: NodeName  # the node that placed it (or learned of it)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: NodeName
    version: int = Field(ge=0)
    generated_at: float
    workloads: list[ManifestEntry] = Field(default_factory=list, max_length=100_000)
    moves: list[Move] = Field(default_factory=list, max_length=100_000)


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[WorkloadId] = Field(max_length=100_000)


class MovesNotice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    moves: list[Move] = Field(max_length=100_000)


# -- durable state ------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS replicas (
    owner       TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    received_at REAL NOT NULL,
    manifest    TEXT NOT NULL           -- Manifest as JSON
);
CREATE TABLE IF NOT EXISTS moves (
    original_id  TEXT PRIMARY KEY,      -- a workload moves at most once
    owner        TEXT NOT NULL,
    new_id       TEXT NOT NULL,
    node         TEXT,
    moved_at     REAL NOT NULL,
    by           TEXT NOT NULL,
    delivered_at REAL                   -- when the owner acknowledged it
);
CREATE INDEX IF NOT EXISTS moves_owner ON moves (owner);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ReplicaStore:
    """`<data_dir>/replicas.sqlite3`: others' manifests, the moves this node knows, its own version."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / REPLICAS_FILENAME
        # Born 0600 like the registry: manifests carry specs, hence environment variables.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # replicas

    def put(self, manifest: Manifest, now: float | None = None) -> tuple[str, int]:
        """Keep `manifest` if it is newer than the one held: ("stored"|"refreshed"|"stale", version held)."""
        now = time.time() if now is None else now
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT version FROM replicas WHERE owner = ?", (manifest.owner,)).fetchone()
                if row is None or manifest.version > row["version"]:
                    self._conn.execute(
                        "INSERT INTO replicas (owner, version, received_at, manifest) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (owner) DO UPDATE SET version = excluded.version, "
                        "received_at = excluded.received_at, manifest = excluded.manifest",
                        (manifest.owner, manifest.version, now, manifest.model_dump_json()),
                    )
                    result, held = "stored", manifest.version
                elif manifest.version == row["version"]:
                    self._conn.execute("UPDATE replicas SET received_at = ? WHERE owner = ?", (now, manifest.owner))
                    result, held = "refreshed", manifest.version
                else:
                    result, held = "stale", int(row["version"])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return result, held

    def get(self, owner: str) -> Manifest | None:
        with self._lock:
            row = self._conn.execute("SELECT manifest FROM replicas WHERE owner = ?", (owner,)).fetchone()
        return Manifest.model_validate_json(row["manifest"]) if row is not None else None

    def get_raw(self, owner: str) -> tuple[int, float, dict[str, Any]] | None:
        with self._lock:
            row = self._conn.execute("SELECT version, received_at, manifest FROM replicas WHERE owner = ?", (owner,)).fetchone()
        return (int(row["version"]), float(row["received_at"]), json.loads(row["manifest"])) if row is not None else None

    def owners(self) -> list[tuple[str, int, float]]:
        with self._lock:
            rows = self._conn.execute("SELECT owner, version, received_at FROM replicas ORDER BY owner").fetchall()
        return [(r["owner"], int(r["version"]), float(r["received_at"])) for r in rows]

    def delete(self, owner: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM replicas WHERE owner = ?", (owner,))

    def moves_in_replicas(self, owner: str) -> list[Move]:
        """Moves about `owner` that other nodes replicated here in their manifests."""
        out = []
        with self._lock:
            rows = self._conn.execute("SELECT manifest FROM replicas WHERE owner != ?", (owner,)).fetchall()
        for row in rows:
            for move in json.loads(row["manifest"]).get("moves", []):
                if move.get("owner") == owner:
                    with contextlib.suppress(ValidationError):
                        out.append(Move.model_validate(move))
        return out

    # moves

    def record_move(self, move: Move) -> bool:
        """Remember a move; False if this workload's move was known already."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO moves (original_id, owner, new_id, node, moved_at, by) VALUES (?, ?, ?, ?, ?, ?)",
                (move.original_id, move.owner, move.new_id, move.node, move.moved_at, move.by),
            )
        return cursor.rowcount > 0

    def moves(self, owner: str | None = None, undelivered: bool = False) -> list[Move]:
        sql, params = "SELECT * FROM moves", []
        where = []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if undelivered:
            where.append("delivered_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY moved_at, original_id", params).fetchall()
        return [Move(owner=r["owner"], original_id=r["original_id"], new_id=r["new_id"], node=r["node"],
                     moved_at=r["moved_at"], by=r["by"]) for r in rows]

    def mark_delivered(self, original_ids: Iterable[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._conn.executemany("UPDATE moves SET delivered_at = ? WHERE original_id = ? AND delivered_at IS NULL",
                                   [(now, i) for i in original_ids])

    def prune_moves(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM moves WHERE (delivered_at IS NOT NULL AND delivered_at < ?) OR moved_at < ?",
                (now - MOVE_KEEP_DELIVERED, now - MOVE_KEEP_UNDELIVERED),
            )
        return cursor.rowcount

    # this node's own manifest version

    def next_version(self, above: int = 0) -> int:
        """A version greater than every one handed out before (and than `above`), kept on disk."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            current = int(row["value"]) if row is not None else 0
            # The wall clock in ms keeps versions growing even if this file is lost.
            version = max(current + 1, above + 1, int(time.time() * 1000))
            self._conn.execute("INSERT INTO meta (key, value) VALUES ('version', ?) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(version),))
        return version


# -- the agent's part -----------------------------------------------------------------


def _forget(tasks: dict[str, asyncio.Task[None]], key: str, _done: asyncio.Task[None]) -> None:
    tasks.pop(key, None)


@dataclass
class _Buddy:
    acked: int = -1  # newest version it confirmed
    last_ok: float = float("-inf")  # monotonic time of its last confirmation
    next_try: float = 0.0


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


class Failover:
    """Replication, respawn and return, for one node agent (see the module docstring)."""

    def __init__(self, agent: NodeAgent, k: int = K, grace: float = GRACE) -> None:
        self.agent = agent
        self.name = agent.name
        self.k = k
        self.grace = grace
        self.flagged = bool(getattr(agent.config, "respawn_on_node_failure", False))
        self.replicas = ReplicaStore(agent.data_dir)
        self._registry: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._dirty = True
        self._version_floor = 0
        self.manifest: Manifest | None = None
        self._manifest_body: dict[str, Any] | None = None
        self._digest = ""
        self._buddies: dict[str, _Buddy] = {}
        self._pushes: dict[str, asyncio.Task[None]] = {}
        self._statuses: dict[str, str] = {}
        self.flagged_nodes: set[str] = {self.name} if self.flagged else set()
        self._episodes: dict[str, tuple[asyncio.Task[None], int]] = {}  # owner → (handler, manifest version)
        self._failed_since: dict[str, float] = {}
        self._acting: set[str] = set()
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._delivery_retry: dict[str, float] = {}
        self._checks: set[asyncio.Task[Any]] = set()
        self._last_check = float("-inf")
        self._sem = asyncio.Semaphore(RESPAWN_CONCURRENCY)
        self._started = time.monotonic()
        self._last_gc = time.monotonic()
        r = agent.metrics.registry
        self.m_respawns = Counter("hypercore_failover_respawns", "Workloads of failed nodes placed again, by result.",
                                  ["result"], registry=r)
        self.m_moved_away = Counter("hypercore_failover_moved_away",
                                    "Old copies stopped here because they were moved while this node was failed.", registry=r)
        self.m_held = Gauge("hypercore_failover_replicas_held", "Other nodes' manifests held here.", registry=r)
        self.m_pushes = Counter("hypercore_failover_manifest_pushes", "Manifest pushes to buddies, by outcome.",
                                ["outcome"], registry=r)

    # -- wiring -------------------------------------------------------------------

    async def run(self) -> None:
        """The node's failover loops; runs until cancelled."""
        loops = [self._flags_loop(), self._replicate_loop(), self._watch_loop(), self._startup_check()]
        await asyncio.gather(*loops)

    def close(self) -> None:
        episodes = [task for task, _version in self._episodes.values()]
        for task in [*self._pushes.values(), *episodes, *self._deliveries.values(), *self._checks]:
            task.cancel()
        if self._registry is not None:
            self._registry.close()
        self.replicas.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return task

    # -- the cluster as this node sees it -----------------------------------------------

    def _alive(self) -> list[str]:
        """Alive, admitted nodes with an API (this one included), sorted."""
        return self.agent.view.peers()

    def _status(self, node: str) -> str | None:
        view = self.agent.view.node(node)
        return view.status if view is not None else None

    def buddies(self) -> list[str]:
        return buddies_of(self.name, self._alive(), self.k, self.flagged_nodes)

    async def _flags_loop(self) -> None:
        """Publish this node's flag as a Serf tag, and keep reading the others'."""
        serf = self.agent.serf
        if serf is None:
            return
        published = False
        while True:
            try:
                if not published:
                    if self.flagged:
                        await serf.rpc.tags(set={FLAG_TAG: "1"})
                    else:
                        await serf.rpc.tags(delete=[FLAG_TAG])
                    published = True
                members = await serf.rpc.members()
                self.flagged_nodes = {m.name for m in members if m.tags.get(FLAG_TAG) == "1"}
            except (HypercoreError, OSError) as exc:
                log.warning("cannot publish or read failover flags through serf", extra={"error": str(exc)})
            await asyncio.sleep(FLAGS_REFRESH)

    async def _ask(self, node: str, method: str, path: str, body: Any = None, timeout: float = ASK_TIMEOUT) -> Any | None:
        """JSON of a 200 answer of `node`, or None (unreachable, refused, not JSON)."""
        try:
            r = await self.agent.transport.request(node, method, path, json_body=body, timeout=timeout)
        except PeerUnreachable:
            return None
        if r.status != 200:
            return None
        try:
            return r.json()
        except ValueError:
            return None

    # -- replication ------------------------------------------------------------------

    def _registry_changed(self) -> bool:
        """Whether the workload registry was written since the last call (SQLite's data_version)."""
        if self._registry is None:
            self._registry = sqlite3.connect(self.agent.store.path, check_same_thread=False, isolation_level=None)
        version = self._registry.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _refresh_manifest(self) -> None:
        workloads = [
            ManifestEntry(id=r.id, spec=r.spec, policy=r.policy, request_id=r.request_id, state=r.state.value,
                          owner=r.owner)  # type: ignore[arg-type]
            for r in self.agent.store.list(states=_LIVE)
        ]
        moves = self.replicas.moves()
        content = json.dumps([[w.model_dump(mode="json") for w in workloads], [m.model_dump(mode="json") for m in moves]],
                             sort_keys=True)
        digest = hashlib.sha256(content.encode()).hexdigest()
        if self.manifest is not None and digest == self._digest and self.manifest.version > self._version_floor:
            return
        version = self.replicas.next_version(self._version_floor)
        self.manifest = Manifest(owner=self.name, version=version, generated_at=time.time(), workloads=workloads, moves=moves)
        self._manifest_body = self.manifest.model_dump(mode="json")
        self._digest = digest
        log.debug("manifest changed", extra={"version": version, "workloads": len(workloads), "moves": len(moves)})

    def replicate_tick(self) -> None:
        if self._registry_changed() or self._dirty or self.manifest is None:
            self._dirty = False
            self._refresh_manifest()
        now = time.monotonic()
        alive = self._alive()
        buddies = buddies_of(self.name, alive, self.k, self.flagged_nodes)
        for gone in set(self._buddies) - set(buddies):
            del self._buddies[gone]
        assert self.manifest is not None
        for buddy in buddies:
            state = self._buddies.setdefault(buddy, _Buddy())
            if buddy in self._pushes or now < state.next_try:
                continue
            if state.acked < self.manifest.version or now - state.last_ok >= REFRESH_INTERVAL:
                state.next_try = now + PUSH_MIN_INTERVAL
                task = asyncio.ensure_future(self._push(buddy, self.manifest.version, self._manifest_body))
                self._pushes[buddy] = task
                task.add_done_callback(functools.partial(_forget, self._pushes, buddy))
        if now - self._last_gc >= REFRESH_INTERVAL:
            self._last_gc = now
            self._collect_garbage()

    async def _push(self, buddy: str, version: int, body: dict[str, Any] | None) -> None:
        state = self._buddies.get(buddy) or _Buddy()
        try:
            r = await self.agent.transport.request(buddy, "PUT", f"/v1/local/replicas/{quote(self.name, safe='')}",
                                               json_body=body, timeout=ASK_TIMEOUT)
        except PeerUnreachable as exc:
            self.m_pushes.labels(outcome="unreachable").inc()
            state.next_try = time.monotonic() + PUSH_RETRY
            log.debug("manifest push failed", extra={"buddy": buddy, "error": str(exc)})
            return
        if r.status != 200:
            self.m_pushes.labels(outcome="refused").inc()
            state.next_try = time.monotonic() + PUSH_RETRY
            log.warning("buddy refused this node's manifest", extra={"buddy": buddy, "status": r.status,
                                                                     "error": r.error_message()})
            return
        self.m_pushes.labels(outcome="ok").inc()
        try:
            held = int(r.json().get("stored_version", version))
        except (ValueError, TypeError, AttributeError):
            held = version
        if held > version:
            # The buddy holds a newer version than ours (our replicas file was lost): jump above it.
            self._version_floor = max(self._version_floor, held)
            self._dirty = True
            return
        state.acked = max(state.acked, version)
        state.last_ok = time.monotonic()

    def _collect_garbage(self) -> None:
        """Drop replicas of owners that are not failed and stopped pushing here (no longer our buddy)."""
        now = time.time()
        held = 0
        for owner, _version, received_at in self.replicas.owners():
            if (self._status(owner) != "failed" and now - received_at > REPLICA_TTL
                    and time.monotonic() - self._started > REPLICA_TTL):
                self.replicas.delete(owner)
                continue
            held += 1
        self.m_held.set(held)
        if self.replicas.prune_moves(now):
            self._dirty = True

    async def _replicate_loop(self) -> None:
        while True:
            try:
                self.replicate_tick()
            except Exception:
                log.exception("failover replication tick failed")
            await asyncio.sleep(TICK)

    # -- watching members ---------------------------------------------------------------

    def watch_tick(self) -> None:
        statuses = {n.name: n.status for n in self.agent.view.nodes()}
        previous, self._statuses = self._statuses, statuses
        now = time.monotonic()
        # Peers back from failed: from inside a healed partition, that is how our own return looks.
        back = sorted(n for n, s in statuses.items() if n != self.name and s == "alive" and previous.get(n) == "failed")
        if back and now - self._last_check >= CHECK_DEBOUNCE:
            self._last_check = now
            self._spawn(self.check_moved(f"{','.join(back)} came back from failed", fan_out=False))
        # Failure episodes: one handler per failed owner whose manifest is held here.
        held = {owner: version for owner, version, _received in self.replicas.owners()}
        for owner, (task, version) in list(self._episodes.items()):
            # Over when the owner is back, or when a newer manifest of it arrived meanwhile.
            if task.done() and (statuses.get(owner) != "failed" or held.get(owner, version) > version):
                del self._episodes[owner]
                if statuses.get(owner) != "failed":
                    self._failed_since.pop(owner, None)
        if self.flagged:
            for owner, version in held.items():
                if owner != self.name and statuses.get(owner) == "failed" and owner not in self._episodes:
                    if owner not in self._failed_since:
                        self._failed_since[owner] = now
                        log.warning("node failed; its manifest is held here", extra={"owner": owner})
                    self._episodes[owner] = (asyncio.ensure_future(self._handle_failure(owner)), version)
        # Moves waiting for their owner to be alive again.
        pending: dict[str, list[Move]] = {}
        for move in self.replicas.moves(undelivered=True):
            pending.setdefault(move.owner, []).append(move)
        for owner, moves in pending.items():
            if statuses.get(owner) == "alive" and owner not in self._deliveries and now >= self._delivery_retry.get(owner, 0):
                task = asyncio.ensure_future(self._deliver(owner, moves))
                self._deliveries[owner] = task
                task.add_done_callback(functools.partial(_forget, self._deliveries, owner))

    async def _watch_loop(self) -> None:
        while True:
            try:
                self.watch_tick()
            except Exception:
                log.exception("failover watch tick failed")
            await asyncio.sleep(WATCH_TICK)

    # -- respawn --------------------------------------------------------------------------

    async def _elect(self, owner: str) -> _Election:
        """The newest manifest of `owner` among the holders asked, and who respawns it."""
        alive = [n for n in self._alive() if n != owner]
        ranked = holder_rank(owner, [*alive, self.name], self.flagged_nodes)
        mine = ranked.index(self.name)
        ask = [n for n in ranked[: max(mine, self.k + 2)] if n != self.name]
        own = self.replicas.get(owner)
        # Their manifest comes along only when it is newer than ours.
        path = f"/v1/local/replicas/{quote(owner, safe='')}?newer_than={own.version if own else -1}"
        answers = await asyncio.gather(*(self._ask(n, "GET", path) for n in ask))
        holders: dict[str, _Holder] = {}
        if own is not None:
            holders[self.name] = _Holder(self.flagged, owner in self._acting, own.version, own)
        for name, body in zip(ask, answers):
            if isinstance(body, dict) and isinstance(body.get("version"), int):
                holders[name] = _Holder(bool(body.get("flagged")), bool(body.get("acting")), body["version"],
                                        body.get("manifest") or {})
        newest = max((h for h in holders.values() if h.manifest), key=lambda h: h.version, default=None)
        if newest is None:
            return _Election(None, None, False)
        manifest = newest.manifest if isinstance(newest.manifest, Manifest) else Manifest.model_validate(newest.manifest)
        if own is None or manifest.version > own.version:
            self.replicas.put(manifest)  # keep the newest copy here too
        respawner = next((n for n in ranked if n in holders and holders[n].flagged), None)
        acting = holders[respawner].acting if respawner else False
        return _Election(manifest, respawner, acting, [n for n in ranked if n in holders])

    async def lookup(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Which of `ids` were placed somewhere: id → (node, workload), over every alive node and this one."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for wid in ids:
            record = self.agent.store.get(wid)
            if record is not None and record.state.value in _EXISTS:
                found[wid] = (self.name, record.to_dict())
        if not ids:
            return found
        others = [n for n in self._alive() if n != self.name]
        answers = await asyncio.gather(*(self._ask(n, "POST", "/v1/local/failover/lookup", {"ids": ids}, timeout=5.0)
                                         for n in others))
        for node, body in zip(others, answers):
            for wid, workload in (body or {}).get("found", {}).items():
                if wid in ids and (wid not in found or workload.get("state") == "running"):
                    found[wid] = (node, workload)
        return found

    def is_acting(self, owner: str) -> bool:
        """Whether this node is placing `owner`'s workloads right now."""
        return owner in self._acting

    def local_lookup(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for wid in ids:
            record = self.agent.store.get(wid)
            if record is not None and record.state.value in _EXISTS:
                out[wid] = record.to_dict()
        return out

    async def _handle_failure(self, owner: str) -> None:
        delay = 1.0
        while self._status(owner) == "failed":
            try:
                wait = await self._failure_round(owner)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("respawn round failed", extra={"owner": owner})
                wait = delay
                delay = min(delay * 2, 30.0)
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _failure_round(self, owner: str) -> float | None:
        """One look at a failed owner; seconds until the next one, or None when nothing is left to do."""
        election = await self._elect(owner)
        manifest = election.manifest
        if manifest is None:
            return None
        known = {m.original_id for m in self.replicas.moves(owner=owner)}
        todo = [e for e in manifest.workloads if e.id not in known]
        if not todo:
            return None
        since = self._failed_since.get(owner, time.monotonic())
        waited = time.monotonic() - since
        role = "respawner"
        if election.respawner != self.name:
            if waited < self.grace or (election.respawner_acting and waited < MAX_DEFER):
                return 1.0
            role = "fallback"
        # What was placed again already (by the respawner, or by us before a restart) is only recorded.
        found = await self.lookup([respawn_id(e.id) for e in todo])
        for e in todo:
            if (hit := found.get(respawn_id(e.id))) is not None:
                self._record_move(Move(owner=owner, original_id=e.id, new_id=respawn_id(e.id), node=hit[0],
                                       moved_at=time.time(), by=self.name))
        todo = [e for e in todo if respawn_id(e.id) not in found]
        if not todo:
            return None
        if self._status(owner) != "failed":
            return None
        log.warning("respawning the workloads of a failed node", extra={
            "owner": owner, "workloads": len(todo), "role": role, "manifest_version": manifest.version,
            "holders": ",".join(election.holders), "failed_for_s": round(waited, 1)})
        self._acting.add(owner)
        try:
            results = await asyncio.gather(*(self._respawn_one(owner, e) for e in todo), return_exceptions=True)
        finally:
            self._acting.discard(owner)
        for e, result in zip(todo, results):
            if isinstance(result, BaseException):
                log.error("respawn of a workload raised", extra={"owner": owner, "id": e.id, "error": repr(result)})
        if all(r is True for r in results):
            log.info("every workload of the failed node runs again", extra={"owner": owner, "moved": len(results)})
            return None
        return 5.0

    async def _respawn_one(self, owner: str, entry: ManifestEntry) -> bool:
        async with self._sem:
            if self._status(owner) != "failed":
                return False
            policy: Policy | None = None
            if entry.policy is not None:
                try:
                    policy = Policy(**entry.policy)
                except (ValidationError, TypeError) as exc:
                    log.error("the policy a workload was placed with does not parse any more; using the cluster default",
                              extra={"owner": owner, "id": entry.id, "error": str(exc)})
            try:
                placement = await self.agent.scheduler.place(entry.spec, policy, request_id=respawn_request_id(entry.id),
                                                             owner=entry.owner)
            except (NoQualifyingNode, PlacementFailed, HypercoreError) as exc:
                self.m_respawns.labels(result="failed").inc()
                log.warning("could not place a workload of a failed node yet; will retry",
                            extra={"owner": owner, "id": entry.id, "error": str(exc)})
                return False
            if placement.workload is None:
                return False
            new_id = str(placement.workload.get("id"))
            if new_id != respawn_id(entry.id):
                log.error("respawn got an unexpected workload id", extra={"id": entry.id, "expected": respawn_id(entry.id),
                                                                          "got": new_id})
            self._record_move(Move(owner=owner, original_id=entry.id, new_id=new_id, node=placement.node,
                                   moved_at=time.time(), by=self.name))
            self.m_respawns.labels(result="placed").inc()
            log.info("respawned a workload of a failed node", extra={
                "owner": owner, "id": entry.id, "new_id": new_id, "node": placement.node})
            return True

    def _record_move(self, move: Move) -> None:
        if self.replicas.record_move(move):
            self._dirty = True  # goes into our manifest, hence to our buddies

    async def _deliver(self, owner: str, moves: list[Move]) -> None:
        body = None
        if self.agent.transport.reachable(owner):
            body = await self._ask(owner, "POST", "/v1/local/failover/moved",
                                   {"moves": [m.model_dump(mode="json") for m in moves]}, timeout=60.0)
        if isinstance(body, dict):
            self.replicas.mark_delivered(m.original_id for m in moves)
            self._dirty = True
            log.info("told a returning node which of its workloads moved",
                     extra={"owner": owner, "moves": len(moves), "results": json.dumps(body.get("results", {}))})
        else:
            self._delivery_retry[owner] = time.monotonic() + DELIVERY_RETRY

    # -- return -----------------------------------------------------------------------------

    async def _startup_check(self) -> None:
        """After a (re)start: once peers are visible, find out what moved while this node was away."""
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if any(n != self.name for n in self._alive()):
                await asyncio.sleep(1.0)  # let the view fill in
                self._last_check = time.monotonic()
                await self.check_moved("start", fan_out=True)
                return
            await asyncio.sleep(0.5)

    async def check_moved(self, reason: str, fan_out: bool) -> list[str]:
        """Ask the buddies (and, with `fan_out`, every alive node) whether workloads of ours moved; stop those."""
        mine = self.agent.store.list(states=_LIVE)
        if not mine:
            return []
        moves: dict[str, Move] = {}
        alive = self._alive()
        ask = holder_rank(self.name, alive, self.flagged_nodes)[: self.k + 2]
        path = f"/v1/local/failover/moves/{quote(self.name, safe='')}"
        answers = await asyncio.gather(*(self._ask(n, "GET", path) for n in ask))
        for body in answers:
            for raw in (body or {}).get("moves", []):
                with contextlib.suppress(ValidationError):
                    move = Move.model_validate(raw)
                    if move.owner == self.name:
                        moves.setdefault(move.original_id, move)
        if fan_out:
            ids = {respawn_id(r.id): r.id for r in mine}
            for new_id, (node, _w) in (await self.lookup(list(ids))).items():
                moves.setdefault(ids[new_id], Move(owner=self.name, original_id=ids[new_id], new_id=new_id, node=node,
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
        if move.owner != self.name or move.new_id == move.original_id:
            return "ignored"
        record = self.agent.store.get(move.original_id)
        if record is None:
            return "unknown"
        if record.state.finished:
            return "finished"
        await self.agent.manager.stop(move.original_id, reason=moved_reason(move.node, move.new_id))
        self.agent.beacon_changed()
        self.m_moved_away.inc()
        log.warning("stopped a workload that was moved while this node was failed", extra={
            "id": move.original_id, "new_id": move.new_id, "node": move.node, "by": move.by})
        return "stopped"

    # -- what the API shows ---------------------------------------------------------------------

    def moves_about(self, owner: str) -> list[Move]:
        seen: dict[str, Move] = {m.original_id: m for m in self.replicas.moves(owner=owner)}
        for move in self.replicas.moves_in_replicas(owner):
            seen.setdefault(move.original_id, move)
        return sorted(seen.values(), key=lambda m: (m.moved_at, m.original_id))

    def status(self) -> dict[str, Any]:
        moved_away = [r.to_dict() for r in self.agent.store.list(states=(WorkloadState.STOPPED,))
                      if (r.error or "").startswith("moved to ")]
        return {
            "node": self.name,
            "flagged": self.flagged,
            "version": self.manifest.version if self.manifest else None,
            "workloads": len(self.manifest.workloads) if self.manifest else None,
            "buddies": {b: {"acked": s.acked} for b, s in self._buddies.items()},
            "replicas": {o: {"version": v, "received_at": t} for o, v, t in self.replicas.owners()},
            "respawning": sorted(self._acting),
            "moves": [m.model_dump(mode="json") for m in self.replicas.moves()],
            "moved_away": moved_away,
        }
