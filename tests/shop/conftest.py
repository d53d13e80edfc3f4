"""Fixtures for the app's tests: a test database, and one transaction per test, rolled back.

The routes commit, as they must in production. Each test still starts from empty tables: every
request gets a session of its own, as in production, closed when the request ends, but bound to
the test's connection, whose transaction is rolled back after the test; the sessions' commits
only release savepoints inside that transaction. The database is `TEST_DATABASE_URL` (in-memory
SQLite by default), never the app's own.
"""

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from labkit.shop.config import async_url, database_url
from labkit.shop.database import get_async_db, get_db
from labkit.shop.main import app
from labkit.shop.models import Base
from labkit.shop.sqlite_transactions import begin_sqlite_transactions


def engine_options(url: URL) -> dict[str, Any]:
    """Every connection to ``sqlite://`` opens a new, empty database of its own, so the pool
    must hand out one connection only (StaticPool). And `def` routes run in worker threads,
    which sqlite3 refuses to share a connection with unless told it may."""
    if url.get_backend_name() == "sqlite":
        return {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    return {}


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio, as the app does under uvicorn."""
    return "asyncio"


@pytest.fixture(scope="session")
def test_database_url() -> str:
    """`TEST_DATABASE_URL`, else in-memory SQLite. Read when the tests start, not when this file
    is imported, so that whatever sets it (a CI step, a pytest plugin) may do so late."""
    return os.environ.get("TEST_DATABASE_URL", "sqlite://")


@pytest.fixture(scope="session")
def engine(test_database_url: str) -> Iterator[Engine]:
    """One engine, and the tables, for the whole test run: creating them per test is slow."""
    url = database_url(test_database_url)
    engine = create_engine(url, **engine_options(url))
    if url.get_backend_name() == "sqlite":
        # sqlite3 sends no BEGIN before a SAVEPOINT, so a route's commit (a RELEASE) would
        # make its rows permanent and the rollback below could not undo them.
        begin_sqlite_transactions(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """The test's connection, in a transaction that the test never commits: rolled back after it."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@pytest.fixture
def get_test_db(connection: Connection) -> Callable[[], Iterator[Session]]:
    """The replacement for `get_db`: a session per request, closed when the request ends, as the
    app's own, but bound to the test's connection.

    "create_savepoint": the routes' commit() and rollback() end a savepoint, not the test's
    transaction, so a test sees what its requests wrote and the next test sees none of it.
    """

    def get_test_db() -> Iterator[Session]:
        with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
            yield session

    return get_test_db


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    """The test's own session, on the same connection: what the requests left, as the test sees
    it."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        yield session


@pytest.fixture
def client(get_test_db: Callable[[], Iterator[Session]]) -> Iterator[TestClient]:
    """The app, each request served by a session of its own on the test's connection.

    Not ``lambda: session``: one session for every request, closed by no request, hides the bugs
    that show only once the request's session is closed (an object read after it, by a
    background task), and every request shares its identity map.
    """
    app.dependency_overrides[get_db] = get_test_db
    # No `with`: that would run the app's lifespan, which creates the tables in the app's
    # real database. The test database has its tables already.
    yield TestClient(app)
    app.dependency_overrides.clear()


@pytest.fixture
async def async_connection(test_database_url: str) -> AsyncIterator[AsyncConnection]:
    """The async counterpart of `connection`, on the same database through its async driver.

    An async engine's connections belong to the event loop that opened them, and each test
    gets a loop of its own, so the engine lives for one test only.
    """
    url = async_url(test_database_url)
    engine = create_async_engine(url, **engine_options(url))
    if url.get_backend_name() == "sqlite":
        begin_sqlite_transactions(engine.sync_engine)
    async with engine.connect() as connection:
        transaction = await connection.begin()
        # In-memory SQLite through aiosqlite is another database than the sync engine's, so it
        # needs the tables too (on PostgreSQL they exist, and create_all skips them). Created
        # inside the transaction, they are rolled back with it.
        await connection.run_sync(Base.metadata.create_all)
        yield connection
        await transaction.rollback()
    await engine.dispose()


def _async_session(connection: AsyncConnection) -> AsyncSession:
    # expire_on_commit=False, as the app's own: no implicit reload after a commit.
    return AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
async def async_session(async_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """The test's own async session, on the same connection."""
    async with _async_session(async_connection) as session:
        yield session


@pytest.fixture
async def async_client(async_connection: AsyncConnection) -> AsyncIterator[AsyncClient]:
    """An HTTP client that calls the app in this event loop, each request with an `AsyncSession`
    of its own on the test's connection, closed when the request ends.

    ASGITransport does not run the lifespan either: the app's real database stays untouched.
    """

    async def get_test_async_db() -> AsyncIterator[AsyncSession]:
        async with _async_session(async_connection) as session:
            yield session

    app.dependency_overrides[get_async_db] = get_test_async_db
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client
    app.dependency_overrides.clear()
