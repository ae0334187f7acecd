"""Shared fixtures: databases on each backend, a local feed server, mocked `requests`, settings."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from sqlalchemy import MetaData, create_engine, text

from monitor.config import Settings, settings_from_dict
from monitor.feedserver import FeedServer
from monitor.storage.db import Database, normalize_url

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"
POSTGRES_URL = os.environ.get("MONITOR_TEST_POSTGRES_URL")

BRAND = {
    "name": "Bouygues Telecom",
    "aliases": ["Bouygues Télécom", "BouyguesTelecom"],
    "handles": ["@bouyguestelecom"],
    "exclude": ["Bouygues Construction"],
}


# PostgreSQL runs wherever a server is configured (.ci/run always sets it); elsewhere, skipped with why.
NEEDS_POSTGRES = pytest.mark.skipif(
    not POSTGRES_URL, reason="PostgreSQL tests need MONITOR_TEST_POSTGRES_URL (.ci/run sets it)"
)
POSTGRES = pytest.param("postgresql", marks=NEEDS_POSTGRES)


@pytest.fixture(params=["sqlite", POSTGRES])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a private schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'monitor.db'}"
        return
    assert POSTGRES_URL, "a PostgreSQL parameter must carry the NEEDS_POSTGRES mark"
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(POSTGRES_URL))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def brands() -> tuple[Any, ...]:
    """The test brand as a source receives it (sources build their default queries from it)."""
    return settings_from_dict({"database": "sqlite://", "brands": [BRAND]}).brands


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Every HTTP call in the test goes here; an unregistered one fails as a connection error."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    """Settings for one brand on the test database; keyword arguments override top-level keys."""

    def build(**overrides: Any) -> Settings:
        raw: dict[str, Any] = {"database": db_url, "brands": [BRAND], "sources": []}
        raw.update(overrides)
        return settings_from_dict(raw, file="<test>")

    return build


def reflected(engine: Any) -> MetaData:
    """Every table in the database, as it is (not as the code declares it): for tests that dump
    all stored data. SQLAlchemy cannot reflect the expression index of migration 0006 and says so."""
    metadata = MetaData()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        metadata.reflect(engine)
    return metadata
