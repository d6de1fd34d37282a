"""Opening the agent's SQLite files: born 0600, WAL, and safe to share between the loop and threads.

The registry and the failover replicas hold specs, hence environment
variables that may carry secrets: the file is created 0600 before SQLite
touches it (SQLite gives its -wal/-shm files the database file's mode).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def open_private_db(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (multi-statement changes use explicit transactions), WAL journal."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across application crashes in WAL mode; only a power
        # loss may drop the last transactions, which the readers tolerate.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn
