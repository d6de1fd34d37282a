"""The placement directory: where each request id's workload went, kept by the request id's holders.

A request id K (user-scoped: `alice/job-1`) has HOLDERS holders: the first
alive nodes in K's rendezvous order. The first is K's *owner*, which places
K (placement.forwarding brings every submission of K there); the next ones
are its *buddies*. Each holder keeps one `DirectoryEntry` per request id in
`<data_dir>/directory.sqlite3`: the workload id, its state (placing, placed,
failed), the node it was placed on, and the nodes an attempt went to that
may hold a copy (`trying`). So a duplicate is found by reading one entry and
asking the one node it names, not by asking every node (the node's side of
this is placement.directory_sync; docs/placement-protocol.md says why it is
enough and where it is not).

Writes are compare-and-set by version: an entry carries a version that only
grows, and a write names the version it replaces (`base`). A holder stores a
write only if what it holds is not newer than that base; otherwise it keeps
its entry and answers with it, and the writer must first look at the nodes
that entry names. Two placers that do not know of each other therefore meet
at the holders they share.

This module is the pure part and the store; it does no I/O but SQLite.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hypercore.placement.ids import home_of, node_set, rendezvous_rank, workload_id_for
from hypercore.sqlite import open_private_db
from hypercore.workload import WORKLOAD_ID_PATTERN

log = logging.getLogger("hypercore.directory")

DIRECTORY_FILENAME: Final = "directory.sqlite3"
HOLDERS: Final = 3  # the owner and its two buddies
MAX_TRYING: Final = 16  # nodes one entry may name as maybe holding a copy
MAX_WRITES: Final = 1000  # entries in one push between holders

NodeName = Annotated[str, Field(min_length=1, max_length=256)]


class DirectoryEntry(BaseModel):
    """One request id's placement, as its holders keep it."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=512)  # the user-scoped request id (placement.ids.user_request_id)
    id: str = Field(pattern=WORKLOAD_ID_PATTERN)  # always workload_id_for(key)
    state: Literal["placing", "placed", "failed"]
    node: NodeName | None = None  # where it was placed (state placed)
    trying: list[NodeName] = Field(default_factory=list, max_length=MAX_TRYING)  # attempts that may have started it
    version: int = Field(ge=1)
    by: NodeName  # the node that wrote this version
    updated_at: float

    @model_validator(mode="after")
    def _id_of_key(self) -> DirectoryEntry:
        # An entry cannot point a request id at another request's workload.
        if self.id != workload_id_for(self.key):
            raise ValueError(f"id {self.id} is not the workload id of request {self.key!r}")
        if self.state == "placed" and not self.node:
            raise ValueError("a placed entry names its node")
        return self

    def maybe_holding(self) -> list[str]:
        """The nodes that may hold a copy: where it was placed, then where attempts went."""
        nodes = [self.node] if self.node else []
        return nodes + [n for n in self.trying if n not in nodes]


class DirectoryWrite(BaseModel):
    """An entry, and the version it replaces (0: none)."""

    model_config = ConfigDict(extra="forbid")

    entry: DirectoryEntry
    base: int = Field(ge=0)


class DirectoryPush(BaseModel):
    """Body of PUT /v1/local/directory: writes of one holder to another."""

    model_config = ConfigDict(extra="forbid")

    writes: list[DirectoryWrite] = Field(max_length=MAX_WRITES)


def holders_of_workload(workload_id: str, alive: Iterable[str], n: int = HOLDERS) -> list[str]:
    """The nodes that keep the entry of the request whose workload id is `workload_id` (if it had a request id)."""
    return rendezvous_rank(workload_id, alive, n)


def holders_of(key: str, alive: Iterable[str], n: int = HOLDERS) -> list[str]:
    """The nodes that keep `key`'s entry, owner first: those of its workload id (placement.ids.request_rank).

    A request id that names its home (`…@node`, placement.ids.home_of) is kept by that node while it is in
    `alive`, and by the home's own buddies: the first n - 1 others in the rendezvous order of the home's name,
    the order failover gives a node's buddies (hypercore.failover.model). Those are the nodes the home talks
    to anyway, so a claim goes out on connections it holds open, not on new ones to nodes a hash picked (most
    of a spawn's cost at 100 nodes: docs/scale.md). Once the home is gone, its first buddy owns its requests
    and holds their claims: the order of the others does not change. A node that knows only the workload id
    finds such an entry on the workload id's first node, which the home sends it to (Directory.claim).
    """
    home = home_of(key)
    nodes = node_set(alive)
    if home is None:
        return nodes.rank(workload_id_for(key), n)
    if home not in nodes:
        return nodes.rank(home, n)
    return [home, *[x for x in nodes.rank(home, n) if x != home][:n - 1]]


def pointer_of(key: str, alive: Iterable[str]) -> str | None:
    """For a request id that names its home: the node that a lookup by its workload id asks first
    (holders_of_workload), which keeps a copy of the entry when it is not one of the request id's holders."""
    if home_of(key) is None:
        return None
    nodes = node_set(alive)  # ranked twice below: the seeds hashed (or found) once
    first = holders_of_workload(workload_id_for(key), nodes, 1)
    return first[0] if first and first[0] not in holders_of(key, nodes) else None


def next_version(above: int) -> int:
    """A version above `above`; the wall clock in ms keeps versions growing across writers and restarts."""
    return max(above + 1, int(time.time() * 1000))


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    key        TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    entry      TEXT NOT NULL            -- DirectoryEntry as JSON
);
CREATE INDEX IF NOT EXISTS entries_updated ON entries (updated_at);
CREATE INDEX IF NOT EXISTS entries_workload ON entries (json_extract(entry, '$.id'));
"""


class DirectoryStore:
    """`<data_dir>/directory.sqlite3`: the entries this node holds, as owner or buddy."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / DIRECTORY_FILENAME
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            # Not the registry: the buddies hold copies of every entry, so a damaged file is set
            # aside (kept for a post-mortem) rather than stopping the node.
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            log.error("placement directory unreadable; set aside, starting empty",
                      extra={"file": str(self.path), "moved_to": str(aside), "error": str(exc)})
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(Path(f"{aside}{suffix}"))
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = open_private_db(self.path)  # keys name users and their request ids
        try:
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _decode(self, key: str, text: str) -> DirectoryEntry | None:
        try:
            return DirectoryEntry.model_validate_json(text)
        except ValidationError as exc:
            log.warning("placement directory row does not decode; ignored", extra={"key": key[:80], "error": str(exc)[:200]})
            return None

    def get(self, key: str) -> DirectoryEntry | None:
        with self._lock:
            row = self._conn.execute("SELECT entry FROM entries WHERE key = ?", (key,)).fetchone()
        return self._decode(key, row["entry"]) if row is not None else None

    def by_workload(self, workload_id: str) -> DirectoryEntry | None:
        """The entry of the request whose workload id is `workload_id`."""
        with self._lock:
            row = self._conn.execute("SELECT key, entry FROM entries WHERE json_extract(entry, '$.id') = ?",
                                     (workload_id,)).fetchone()
        return self._decode(row["key"], row["entry"]) if row is not None else None

    def put(self, entry: DirectoryEntry) -> None:
        """This node's own write (it holds the request id's lock): kept unless a newer version is held."""
        self.write(entry, base=entry.version - 1)

    def write(self, entry: DirectoryEntry, base: int) -> tuple[bool, DirectoryEntry | None]:
        """Compare-and-set: keep `entry` if the held version is at most `base` (or is this very version).

        Returns (stored, the entry held afterwards).
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT version, entry FROM entries WHERE key = ?", (entry.key,)).fetchone()
                if row is not None and row["version"] > base and row["version"] != entry.version:
                    self._conn.execute("COMMIT")
                    return False, self._decode(entry.key, row["entry"])
                if row is None or row["version"] != entry.version:
                    self._conn.execute(
                        "INSERT INTO entries (key, version, updated_at, entry) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
                        "updated_at = excluded.updated_at, entry = excluded.entry",
                        (entry.key, entry.version, entry.updated_at, entry.model_dump_json()))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return True, entry

    def older_than(self, cutoff: float, limit: int = MAX_WRITES) -> list[DirectoryEntry]:
        """Entries last written before `cutoff` (wall clock), oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT key, entry FROM entries WHERE updated_at < ? ORDER BY updated_at LIMIT ?",
                                      (cutoff, limit)).fetchall()
        return [e for e in (self._decode(r["key"], r["entry"]) for r in rows) if e is not None]

    def touch(self, key: str, version: int, now: float) -> None:
        """Move `key`'s entry to the back of the collection order (its workload is still there)."""
        with self._lock:
            self._conn.execute("UPDATE entries SET updated_at = ? WHERE key = ? AND version = ?", (now, key, version))

    def delete(self, key: str, version: int) -> bool:
        """Drop `key`'s entry if it is still at `version` (a newer write wins over a collection)."""
        with self._lock:
            cursor = self._conn.execute("DELETE FROM entries WHERE key = ? AND version = ?", (key, version))
        return cursor.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM entries").fetchone()[0])
