"""The database handle: engine setup per backend, sessions, and migrations on first start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from monitor.errors import StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 7_303_911  # pg_advisory_xact_lock key: one node migrates at a time


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use psycopg 3 for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def display_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (pysqlite's own BEGIN is deferred,
    # which deadlocks two writers upgrading their locks).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One per process. `session()` opens a transaction scope; `upgrade()` runs migrations."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalize_url(url)
        self.shown_url = display_url(self.url)
        try:
            self.engine: Engine = create_engine(self.url, pool_pre_ping=not self.is_sqlite)
        except (ArgumentError, ImportError) as exc:
            raise StorageError(f"invalid database URL {self.shown_url}: {exc}") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.ensure_schema()

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block exits normally, rolled back otherwise."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise self.error(exc) from exc
        finally:
            session.close()

    def error(self, exc: SQLAlchemyError) -> StorageError:
        """The StorageError a user sees for a driver error: which database, and its first line."""
        return StorageError(f"database error on {self.shown_url}: {_short(exc)}")

    def _alembic(self, connection: Any) -> AlembicConfig:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic(None)).get_current_head()

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to `revision` (on PostgreSQL, one node at a time)."""
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                command.upgrade(self._alembic(connection), revision)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot migrate {self.shown_url}: {_short(exc)}") from exc

    def ensure_schema(self) -> None:
        """Migrate on first start (and after an upgrade of the package)."""
        try:
            current = self.current_revision()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open database {self.shown_url}: {_short(exc)}") from exc
        if current != self.head_revision():
            self.upgrade()

    def dispose(self) -> None:
        self.engine.dispose()


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return (str(orig) if orig is not None else str(exc)).strip().splitlines()[0]
