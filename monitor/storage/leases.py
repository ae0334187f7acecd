"""Who may poll a source now, across nodes, and who may run at all on SQLite.

PostgreSQL: a session-level advisory lock per source, held for the poll. A node that dies loses
its connection and with it the lock, so the others take over at their next tick. SQLite: one
node only, enforced with an exclusive lock file beside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from monitor.errors import StorageError
from monitor.storage.db import Database


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(hashlib.sha256(f"monitor-source:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def source_lease(db: Database, source: str) -> Iterator[bool]:
    """Yield True when this node holds the source for the duration of the block."""
    if db.is_sqlite:
        yield True  # single node (see node_lock)
        return
    key = lock_key(source)
    try:
        connection = db.engine.connect()
    except SQLAlchemyError as exc:
        raise db.error(exc) from exc
    try:
        try:
            acquired = bool(
                connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            )
            connection.commit()
        except SQLAlchemyError as exc:
            raise db.error(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
                except SQLAlchemyError:
                    # The server went away mid-poll: the lock went with the session. Drop the
                    # connection rather than return a broken one to the pool.
                    connection.invalidate()
    finally:
        connection.close()


class NodeLock:
    """Refuse a second `monitor run` on one SQLite database (SQLite does not scale out)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        if not self.db.is_sqlite:
            return
        database = make_url(self.db.url).database
        if not database or database == ":memory:":
            return
        path = Path(database).with_name(Path(database).name + ".lock")
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StorageError(
                f"another `monitor run` ({holder}) is already using {self.db.shown_url}; SQLite is single-node: "
                "stop it, or move to PostgreSQL to run several nodes"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
