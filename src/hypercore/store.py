"""The node's registry of workloads: a small SQLite file under the data dir.

The design splits truth in two: the runtimes know what *is* running, this
registry knows what *should* be (what the node accepted, with which handle,
and how it ended). It is what lets an agent restart without losing track of
its workloads, and what makes a retried spawn (same ``request_id``) return the
first attempt's record instead of starting a second copy.

Plain synchronous ``sqlite3`` is used on purpose: every call is a point query
or a tiny write that takes well under a millisecond, so pushing it to a thread
would cost more than it saves. One connection, guarded by a lock, serves the
event loop and worker threads alike; `changed` tells readers of every write.

Damage is contained. A file SQLite cannot read at all stops the agent with
:class:`RegistryDamaged`, which names the file and the way out (``hypercore
node recover``). A row that no longer decodes (a spec that does not validate,
an unknown state) is *quarantined*: the queries the node acts on skip it,
:meth:`WorkloadStore.scan` returns it apart (the API lists it as ``unknown``).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from pydantic import ValidationError

from hypercore.errors import HypercoreError
from hypercore.loops import Notifier
from hypercore.sqlite import open_private_db
from hypercore.workload import LIVE_STATES, WorkloadSpec, WorkloadState

__all__ = ["SCHEMA_VERSION", "DuplicateWorkload", "QuarantinedRow", "RegistryDamaged", "WorkloadRecord",
           "WorkloadStore"]

log = logging.getLogger("hypercore.store")

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

_COLUMNS: Final = ("id", "request_id", "spec", "state", "driver", "handle", "node", "created_at", "started_at",
                   "finished_at", "exit_code", "error", "policy", "owner")
# The primary key never changes; everything else may be updated.
_UPDATABLE: Final = frozenset(_COLUMNS) - {"id"}
_UNFINISHED: Final = tuple(sorted(state.value for state in LIVE_STATES))


class DuplicateWorkload(HypercoreError):
    """A record with this id or request_id is already in the registry."""


class RegistryDamaged(HypercoreError):
    """The registry file is not a database SQLite can read (the agent exits 1 with this message)."""

    exit_code = 1

    def __init__(self, path: Path, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(
            f"the workload registry {path} is damaged ({detail}). With the agent stopped, run "
            f"`hypercore node recover --data-dir {path.parent}`: it moves the file aside and rebuilds the "
            "registry from what the container engine and the workload directories still hold")


class _BadRow(Exception):
    """A row that does not decode; the message says why."""


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


def _plain(value: Any) -> Any:
    """A column value as JSON can carry it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """A registry row that does not decode: kept and shown (state "unknown", with why), never acted on."""

    id: str
    reason: str
    columns: dict[str, Any]

    @property
    def owner(self) -> str | None:
        owner = self.columns.get("owner")
        return owner if isinstance(owner, str) else None

    def to_dict(self) -> dict[str, Any]:
        """The user-facing view, shaped like WorkloadRecord.to_dict (whatever the columns hold)."""
        c = self.columns
        try:
            spec = json.loads(c.get("spec") or "null")
        except (TypeError, ValueError):
            spec = None
        exit_code = c.get("exit_code")
        return {"id": self.id, "node": _plain(c.get("node")), "state": "unknown",
                "spec": spec if isinstance(spec, dict) else {},
                **{k: _number(c.get(k)) for k in ("created_at", "started_at", "finished_at")},
                "exit_code": exit_code if isinstance(exit_code, int) else None, "error": _plain(c.get("error")),
                "owner": self.owner, "quarantined": True, "reason": self.reason,
                "recorded_state": _plain(c.get("state"))}


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


def _json_column(row: sqlite3.Row, column: str) -> dict[str, Any] | None:
    try:
        value = None if row[column] is None else json.loads(row[column])
    except (TypeError, ValueError):
        raise _BadRow(f"its {column} is not JSON") from None
    if value is not None and not isinstance(value, dict):
        raise _BadRow(f"its {column} is not a JSON object")
    return value


def _decode(row: sqlite3.Row) -> WorkloadRecord:
    """The row's record; _BadRow with the reason when it does not decode."""
    try:
        state = WorkloadState(row["state"])
    except ValueError:
        known = ", ".join(s.value for s in WorkloadState)
        raise _BadRow(f"its state {_plain(row['state'])!r} is not a known state ({known})") from None
    try:
        spec = WorkloadSpec.model_validate_json(row["spec"])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()[:3])
        raise _BadRow(f"its spec does not validate: {problems[:300]}") from None
    except (TypeError, ValueError):
        raise _BadRow("its spec is not JSON") from None
    plain = {c: row[c] for c in _COLUMNS if c not in ("spec", "state", "handle", "policy")}
    return WorkloadRecord(spec=spec, state=state, handle=_json_column(row, "handle"),
                          policy=_json_column(row, "policy"), **plain)


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
    return "not a database" in str(exc) or "malformed" in str(exc)


class WorkloadStore:
    """SQLite-backed registry of the workloads this node accepted."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.data_dir / REGISTRY_FILENAME
        self._lock = threading.Lock()
        self._warned: set[str] = set()  # quarantined ids already logged
        self.changed = Notifier()  # after every write (failover replicates, the beacon re-measures)
        conn = None
        try:
            # Born 0600 (commands and environment variables may carry secrets), WAL, autocommit.
            self._conn = conn = open_private_db(self.path)
            with self._lock:
                self._migrate()
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise RegistryDamaged(self.path, f"integrity check: {str(check)[:200]}")
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and _is_damage(exc):
                raise RegistryDamaged(self.path, str(exc)) from None
            if isinstance(exc, sqlite3.Error):
                raise HypercoreError(f"cannot open the workload registry {self.path}: {exc}") from None
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
    def _locked(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn
        if write:
            self.changed.notify()

    # -- queries -------------------------------------------------------------

    def insert(self, record: WorkloadRecord) -> None:
        """Add a record; raises DuplicateWorkload if its id or request_id is taken."""
        values = [_encode(col, getattr(record, col)) for col in _COLUMNS]
        placeholders = ", ".join("?" for _ in _COLUMNS)
        try:
            with self._locked(write=True) as conn:
                conn.execute(f"INSERT INTO workloads ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values)
        except sqlite3.IntegrityError as exc:
            raise DuplicateWorkload(f"workload {record.id} (request {record.request_id}) is already registered") from exc

    def get(self, workload_id: str) -> WorkloadRecord | None:
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM workloads WHERE id = ?", (workload_id,)).fetchone()
        return self._record(row) if row is not None else None

    def get_by_request_id(self, request_id: str) -> WorkloadRecord | None:
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM workloads WHERE request_id = ?", (request_id,)).fetchone()
        return self._record(row) if row is not None else None

    def list(self, states: Iterable[WorkloadState] | None = None) -> builtins.list[WorkloadRecord]:
        """Records oldest first, optionally only those in ``states`` (quarantined rows left out)."""
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
        return [record for row in rows if (record := self._record(row)) is not None]

    def scan(self) -> tuple[builtins.list[WorkloadRecord], builtins.list[QuarantinedRow]]:
        """Every row, oldest first: (the records, the rows that do not decode, with why)."""
        with self._locked() as conn:
            rows = conn.execute("SELECT * FROM workloads ORDER BY created_at, id").fetchall()
        quarantined: builtins.list[QuarantinedRow] = []
        return [r for row in rows if (r := self._record(row, quarantined)) is not None], quarantined

    def _record(self, row: sqlite3.Row, bad: builtins.list[QuarantinedRow] | None = None) -> WorkloadRecord | None:
        """The row's record, or None when it does not decode: quarantined (logged once, added to `bad`)."""
        try:
            return _decode(row)
        except _BadRow as exc:
            key = str(_plain(row["id"]))
            if key not in self._warned:
                self._warned.add(key)
                log.warning("quarantined a registry row that does not decode", extra={"id": key, "reason": str(exc)})
            if bad is not None:
                bad.append(QuarantinedRow(key, str(exc), dict(zip(row.keys(), row))))
            return None

    def insert_unknown(self, workload_id: str, *, driver: str, node: str, created_at: float, error: str) -> None:
        """A row whose spec and state are unknown (hypercore node recover): it stays quarantined, listed."""
        try:
            with self._locked(write=True) as conn:
                conn.execute("INSERT INTO workloads (id, spec, state, driver, node, created_at, error) "
                             "VALUES (?, '{}', 'unknown', ?, ?, ?, ?)", (workload_id, driver, node, created_at, error))
        except sqlite3.IntegrityError as exc:
            raise DuplicateWorkload(f"workload {workload_id} is already registered") from exc

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
        with self._locked(write=True) as conn:
            try:
                cursor = conn.execute(f"UPDATE workloads SET {assignments} WHERE id = ?", [*values, workload_id])
            except sqlite3.IntegrityError as exc:
                raise DuplicateWorkload(f"update of workload {workload_id} conflicts with another record") from exc
            if cursor.rowcount == 0:
                return None
            row = conn.execute("SELECT * FROM workloads WHERE id = ?", (workload_id,)).fetchone()
        return self._record(row)

    def delete(self, workload_id: str) -> bool:
        """Remove a record; True if there was one."""
        with self._locked(write=True) as conn:
            cursor = conn.execute("DELETE FROM workloads WHERE id = ?", (workload_id,))
        return cursor.rowcount > 0

    def count_unfinished(self) -> int:
        """Workloads accepted and not yet finished (pending or running)."""
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM workloads WHERE state IN ({', '.join('?' * len(_UNFINISHED))})", _UNFINISHED
            ).fetchone()
        return int(row[0])
