"""Fixtures shared by labkit's tests: a database of the test's own, and the running app; and which
tests are slow.

``pytest -m "not slow"`` is the quick loop. Slow are the notebooks (nbval's items, and the
tests that run or serve them), every test that works on PostgreSQL, and the tests marked
``@pytest.mark.slow`` by hand: timing experiments that wait out pool timeouts, and servers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL
from support import REQUIRE_POSTGRES, database_of_own, postgres_or_skip, selected_backend

from labkit import EngineOptions, create_app, lab_client
from labkit.servers.postgres import NoPostgres, PostgresServer, find_server


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


SLOW_FILES = {"test_notebooks_rerun.py", "test_jupyter_serves_notebooks.py"}
"""Test files that run the notebooks or serve them: as slow as the notebooks themselves."""

POSTGRES_FIXTURES = {"postgres_server", "postgres_url"}


def is_slow(item: pytest.Item) -> bool:
    """A notebook's cell, a test that runs or serves notebooks, or one that works on PostgreSQL
    (through its fixtures, or as the ``postgresql`` case of `support.every_backend`)."""
    if item.path.suffix == ".ipynb" or item.path.name in SLOW_FILES:
        return True
    if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("db_url") == "postgresql"


POSTGRES_NOTEBOOKS = {"05_postgres_and_pools.ipynb"}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Mark the slow tests, before ``-m`` deselects by marker. Then, of the tests left, skip the
    PostgreSQL notebook's cells, with the reason, where no server can be found (so a run that
    leaves the notebooks out never looks for one).

    Under LAB_REQUIRE_POSTGRES nothing is skipped: the notebook then fails at its first
    PostgreSQL cell, with the same reason, and CI goes red.
    """
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
    yield
    needing = [item for item in items if item.path.name in POSTGRES_NOTEBOOKS]
    if not needing or os.environ.get(REQUIRE_POSTGRES):
        return
    try:
        find_server()
    except NoPostgres as exc:
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=str(exc)))
