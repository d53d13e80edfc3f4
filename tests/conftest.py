"""Fixtures shared by labkit's tests: a database of the test's own, the running app, and the
type check, started in the background as soon as the run's tests are known.

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
from support import TypeCheck, database_of_own, postgres_or_skip

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


TYPE_CHECK_TEST = Path(__file__).parent / "test_types.py"
type_check_key = pytest.StashKey[TypeCheck]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the type check as soon as the run's tests are known, if they include test_types.py
    and mypy has its cache: mypy then takes a second beside the first tests, and test_types.py
    finds it done. Without the cache (a fresh clone) it would take a core for 15 s or more,
    while the timing tests run, so it waits for test_types.py itself."""
    if session.config.option.collectonly or not TypeCheck.cached(session.config):
        return
    if any(item.path == TYPE_CHECK_TEST for item in session.items):
        session.stash[type_check_key] = TypeCheck.start(session.config)


@pytest.fixture
def type_check(request: pytest.FixtureRequest) -> TypeCheck:
    """The run's type check: started when collection ended, or now (`pytest_collection_finish`)."""
    started = request.session.stash.get(type_check_key, None)
    return started if started is not None else TypeCheck.start(request.config)
