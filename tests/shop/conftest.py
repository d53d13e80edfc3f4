"""Fixtures for the app's tests: a test database, and one transaction per test, rolled back.

The routes commit, as they must in production. Each test still starts from empty tables: its
session is bound to a connection whose transaction is rolled back after the test, and the
session's commits only release savepoints inside that transaction. The database is
`TEST_DATABASE_URL` (in-memory SQLite by default), never the app's own.
"""

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
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
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that the test never commits: rolled back afterwards."""
    connection = engine.connect()
    transaction = connection.begin()
    # "create_savepoint": the routes' commit() and rollback() end a savepoint, not the
    # transaction, so a test sees what its requests wrote and the next test sees none of it.
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    transaction.rollback()
    connection.close()


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    """The app, with every request served by the test's session instead of the app's own."""
    app.dependency_overrides[get_db] = lambda: session
    # No `with`: that would run the app's lifespan, which creates the tables in the app's
    # real database. The test database has its tables already.
    yield TestClient(app)
    app.dependency_overrides.clear()


@pytest.fixture
async def async_session(test_database_url: str) -> AsyncIterator[AsyncSession]:
    """The async counterpart of `session`, on the same database through its async driver.

    An async engine's connections belong to the event loop that opened them, and each test
    gets a loop of its own, so the engine lives for one test only.
    """
    url = async_url(test_database_url)
    engine = create_async_engine(url, **engine_options(url))
    if url.get_backend_name() == "sqlite":
        begin_sqlite_transactions(engine.sync_engine)
    connection = await engine.connect()
    transaction = await connection.begin()
    # In-memory SQLite through aiosqlite is another database than the sync engine's, so it
    # needs the tables too (on PostgreSQL they exist, and create_all skips them). Created
    # inside the transaction, they are rolled back with it.
    await connection.run_sync(Base.metadata.create_all)
    session = AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield session
    await session.close()
    await transaction.rollback()
    await connection.close()
    await engine.dispose()


@pytest.fixture
async def async_client(async_session: AsyncSession) -> AsyncIterator[AsyncClient]:
    """An HTTP client that calls the app in this event loop, with the test's async session.

    ASGITransport does not run the lifespan either: the app's real database stays untouched.
    """
    app.dependency_overrides[get_async_db] = lambda: async_session
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client
    app.dependency_overrides.clear()
