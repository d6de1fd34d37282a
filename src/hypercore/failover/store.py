"""`<data_dir>/replicas.sqlite3`: other nodes' manifests held here, the moves this node knows, its own version."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from hypercore.failover.model import MOVE_KEEP_DELIVERED, MOVE_KEEP_UNDELIVERED, REPLICAS_FILENAME, Manifest, Move
from hypercore.loops import Notifier
from hypercore.sqlite import open_private_db

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
        self._lock = threading.Lock()
        self._conn = open_private_db(self.path)  # manifests carry specs, hence environment variables
        with self._lock:
            self._conn.executescript(_SCHEMA)
        self.changed = Notifier()  # a manifest held or dropped, a move recorded or delivered (the watch reads them)

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
        if result == "stored":
            self.changed.notify()
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
        self.changed.notify()

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
        if cursor.rowcount > 0:
            self.changed.notify()
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
        self.changed.notify()

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


