"""Fixtures shared by labkit's tests: a fresh database per test, and the running app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from scratch_postgres import REQUIRE_POSTGRES, postgres_or_skip, scratch_postgres_database
from sqlalchemy.engine import URL, make_url

from labkit import EngineOptions, create_app, lab_client, sqlite_url
from labkit.servers.postgres import NoPostgres, PostgresServer, find_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_server() -> PostgresServer:
    return postgres_or_skip()


@pytest.fixture
def postgres_url() -> Iterator[URL]:
    """A new, empty PostgreSQL database of the test's own, dropped afterwards."""
    with scratch_postgres_database() as url:
        yield url


def uses_postgres() -> bool:
    url = os.environ.get("DATABASE_URL")
    return bool(url) and make_url(url).get_backend_name() == "postgresql"


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    """A database of the test's own, on the database `DATABASE_URL` selects.

    Unset: a fresh SQLite file. A PostgreSQL URL: a new database on that server, dropped after.
    CI runs the suite both ways.
    """
    if uses_postgres():
        return request.getfixturevalue("postgres_url")
    return sqlite_url(tmp_path / "lab.db")


@pytest.fixture
def make_app(db_url: URL) -> Callable[..., FastAPI]:
    """`create_app` on the test's database, with engine options (and ``threads``) to vary."""

    def make(*, threads: int | None = None, **options: Any) -> FastAPI:
        return create_app(db_url, EngineOptions(**options), threads=threads)

    return make


@pytest.fixture
async def app_client(
    make_app: Callable[..., FastAPI],
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = make_app()
    async with lab_client(app) as client:
        yield app, client


POSTGRES_NOTEBOOKS = {"05_postgres_and_pools.ipynb"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the PostgreSQL notebook's cells, with the reason, where no server can be found.

    Under LAB_REQUIRE_POSTGRES nothing is skipped: the notebook then fails at its first
    PostgreSQL cell, with the same reason, and CI goes red.
    """
    needing = [item for item in items if item.path.name in POSTGRES_NOTEBOOKS]
    if not needing or os.environ.get(REQUIRE_POSTGRES):
        return
    try:
        find_server()
    except NoPostgres as exc:
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=str(exc)))
