"""Fixtures shared by labkit's tests: a database of the test's own, and the running app.

Which tests are slow, and what the notebooks need, is decided in the conftest.py beside
`notebooks/` and `tests/`, which pytest reads for both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL
from support import database_of_own, postgres_or_skip

from labkit.app.client import lab_client
from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions
from labkit.infra.notebook_database import selected_backend
from labkit.infra.postgres import PostgresServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_server() -> PostgresServer:
    return postgres_or_skip()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A database of the test's own, on the backend `DATABASE_URL` selects.

    Unset: a fresh SQLite file. A PostgreSQL URL: a new database on that server, dropped after.
    CI runs the suite both ways. A test parametrized with `support.every_backend` runs on each.
    """
    backend = getattr(request, "param", None) or selected_backend()
    with database_of_own(backend, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[URL]:
    """A new, empty PostgreSQL database of the test's own, dropped afterwards."""
    with database_of_own("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def make_app(db_url: URL) -> Callable[..., LabApp]:
    """`create_app` on the test's database, with engine options (and ``threads``) to vary."""

    def make(*, threads: int | None = None, **options: Any) -> LabApp:
        return create_app(db_url, EngineOptions(**options), threads=threads)

    return make


@pytest.fixture
async def app_client(
    make_app: Callable[..., LabApp],
) -> AsyncIterator[tuple[LabApp, httpx.AsyncClient]]:
    app = make_app()
    async with lab_client(app) as client:
        yield app, client
