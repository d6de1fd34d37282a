"""The node's registry of workloads: a small SQLite file under the data dir.

The design splits truth in two: the runtimes know what *is* running, this
registry knows what *should* be (what the node accepted, with which handle,
and how it ended). It is what lets an agent restart without losing track of
its workloads, and what makes a retried spawn (same ``request_id``) return the
first attempt's record instead of starting a second copy.

Plain synchronous ``sqlite3`` is used on purpose: every call is a point query
or a tiny write that takes well under a millisecond, so pushing it to a thread
would cost more than it saves. One connection is shared and guarded by a lock,
so the store is safe to use from the event loop and from worker threads alike.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from hypercore.errors import HypercoreError
from hypercore.sqlite import open_private_db
from hypercore.workload import LIVE_STATES, WorkloadSpec, WorkloadState

__all__ = ["SCHEMA_VERSION", "DuplicateWorkload", "WorkloadRecord", "WorkloadStore"]

REGISTRY_FILENAME: Final = "registry.sqlite3"

# Bump when the schema changes and add a step to _MIGRATIONS; PRAGMA
# user_version records which steps a file has already had.
SCHEMA_VERSION: Final = 2

_MIGRATIONS: Final[dict[int, str]] = {
    1: """
    CREATE TABLE workloads (
        id          TEXT PRIMARY KEY,
        request_id  TEXT UNIQUE,          -- NULLs never collide, so only real ids dedupe
        spec        TEXT NOT NULL,        -- WorkloadSpec as JSON
        state       TEXT NOT NULL,        -- WorkloadState value
        driver      TEXT NOT NULL,
        handle      TEXT,                 -- driver-specific JSON, NULL until started
        node        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        started_at  REAL,
        finished_at REAL,
        exit_code   INTEGER,
        error       TEXT,
        policy      TEXT                  -- the placement policy as JSON, if any
    );
    CREATE INDEX workloads_state ON workloads (state);
    """,
    # The user (token name) who created a workload: only they, or a management token, may see or act on it.
    2: """
    ALTER TABLE workloads ADD COLUMN owner TEXT
    """,
}

_COLUMNS: Final = (
    "id",
    "request_id",
    "spec",
    "state",
    "driver",
    "handle",
    "node",
    "created_at",
    "started_at",
    "finished_at",
    "exit_code",
    "error",
    "policy",
    "owner",
)
# The primary key never changes; everything else may be updated.
_UPDATABLE: Final = frozenset(_COLUMNS) - {"id"}
_UNFINISHED: Final = tuple(sorted(state.value for state in LIVE_STATES))


class DuplicateWorkload(HypercoreError):
    """A record with this id or request_id is already in the registry."""


@dataclass(slots=True)
class WorkloadRecord:
    """One workload as this node knows it."""

    id: str
    spec: WorkloadSpec
    state: WorkloadState
    driver: str
    node: str
    created_at: float
    request_id: str | None = None
    handle: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    policy: dict[str, Any] | None = field(default=None)
    owner: str | None = None  # the token name that created it; None: created before owners were recorded

    def to_dict(self) -> dict[str, Any]:
        """The user-facing view (API, CLI): no driver handle, no policy body."""
        return {
            "id": self.id,
            "node": self.node,
            "state": self.state.value,
            "spec": self.spec.model_dump(mode="json"),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "error": self.error,
            "owner": self.owner,
        }


def _encode(column: str, value: Any) -> Any:
    """Python value → what SQLite stores for that column."""
    if value is None:
        return None
    if column == "spec":
        if not isinstance(value, WorkloadSpec):
            raise TypeError("spec must be a WorkloadSpec")
        return value.model_dump_json()
    if column == "state":
        return WorkloadState(value).value
    if column in ("handle", "policy"):
        return json.dumps(value, sort_keys=True)
    return value


def _decode(row: sqlite3.Row) -> WorkloadRecord:
    return WorkloadRecord(
        id=row["id"],
        request_id=row["request_id"],
        spec=WorkloadSpec.model_validate_json(row["spec"]),
        state=WorkloadState(row["state"]),
        driver=row["driver"],
        handle=json.loads(row["handle"]) if row["handle"] is not None else None,
        node=row["node"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        error=row["error"],
        policy=json.loads(row["policy"]) if row["policy"] is not None else None,
        owner=row["owner"],
    )


class WorkloadStore:
    """SQLite-backed registry of the workloads this node accepted."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.data_dir / REGISTRY_FILENAME
        self._lock = threading.Lock()
        # Born 0600 (commands and environment variables may carry secrets), WAL, autocommit.
        self._conn = open_private_db(self.path)
        try:
            with self._lock:
                self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HypercoreError(
                f"{self.path} has schema version {version}, newer than this hypercore understands "
                f"({SCHEMA_VERSION}); upgrade hypercore or use another --data-dir"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            # executescript() would commit on its own; a manual transaction
            # keeps the step and its version bump atomic.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {int(step)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    # -- queries -------------------------------------------------------------

    def insert(self, record: WorkloadRecord) -> None:
        """Add a record; raises DuplicateWorkload if its id or request_id is taken."""
        values = [_encode(col, getattr(record, col)) for col in _COLUMNS]
        placeholders = ", ".join("?" for _ in _COLUMNS)
        try:
            with self._locked() as conn:
                conn.execute(f"INSERT INTO workloads ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values)
        except sqlite3.IntegrityError as exc:
            raise DuplicateWorkload(f"workload {record.id} (request {record.request_id}) is already registered") from exc

    def get(self, workload_id: str) -> WorkloadRecord | None:
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM workloads WHERE id = ?", (workload_id,)).fetchone()
        return _decode(row) if row is not None else None

    def get_by_request_id(self, request_id: str) -> WorkloadRecord | None:
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM workloads WHERE request_id = ?", (request_id,)).fetchone()
        return _decode(row) if row is not None else None

    def list(self, states: Iterable[WorkloadState] | None = None) -> builtins.list[WorkloadRecord]:
        """Records oldest first, optionally only those in ``states``."""
        sql = "SELECT * FROM workloads"
        params: builtins.list[str] = []
        if states is not None:
            params = [WorkloadState(s).value for s in states]
            if not params:
                return []
            sql += f" WHERE state IN ({', '.join('?' for _ in params)})"
        sql += " ORDER BY created_at, id"
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_decode(row) for row in rows]

    def update(self, workload_id: str, **fields: Any) -> WorkloadRecord | None:
        """Set the given columns; returns the updated record, or None if unknown.

        Only known columns are accepted, so a typo fails loudly instead of
        silently not persisting.
        """
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update unknown or immutable column(s): {', '.join(sorted(unknown))}")
        if not fields:
            return self.get(workload_id)
        assignments = ", ".join(f"{col} = ?" for col in fields)
        values = [_encode(col, value) for col, value in fields.items()]
        with self._locked() as conn:
            try:
                cursor = conn.execute(f"UPDATE workloads SET {assignments} WHERE id = ?", [*values, workload_id])
            except sqlite3.IntegrityError as exc:
                raise DuplicateWorkload(f"update of workload {workload_id} conflicts with another record") from exc
            if cursor.rowcount == 0:
                return None
            row = conn.execute("SELECT * FROM workloads WHERE id = ?", (workload_id,)).fetchone()
        return _decode(row)

    def delete(self, workload_id: str) -> bool:
        """Remove a record; True if there was one."""
        with self._locked() as conn:
            cursor = conn.execute("DELETE FROM workloads WHERE id = ?", (workload_id,))
        return cursor.rowcount > 0

    def count_unfinished(self) -> int:
        """Workloads accepted and not yet finished (pending or running)."""
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM workloads WHERE state IN ({', '.join('?' * len(_UNFINISHED))})", _UNFINISHED
            ).fetchone()
        return int(row[0])
