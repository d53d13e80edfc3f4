"""The database setup: an engine, a session factory and a session dependency, sync and async.

Every request gets its own session from `get_db` (or `get_async_db`), closed when the request is
done, which gives its pooled connection back. A route asks for one with ``db: SessionDep``.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from .config import async_url, database_url

SQLITE_TIMEOUT_S = 5.0
"""How long an SQLite writer waits for another's write lock before failing ("database is locked").
It is sqlite3's own default (its `timeout`, SQLite's busy timeout), written out to show where to
change it."""


def connect_args(url: URL) -> dict[str, Any]:
    """sqlite3 refuses a connection made in another thread by default, and the pool hands
    connections to whichever threadpool thread serves the request. aiosqlite passes both
    arguments on to sqlite3."""
    if url.get_backend_name() != "sqlite":
        return {}
    return {"check_same_thread": False, "timeout": SQLITE_TIMEOUT_S}


def set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets a writer commit while other connections are partway through a read. In SQLite's
    default journal (``delete``) the commit waits until every read in progress has ended."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


# The sync setup: one `Session` per request.
DATABASE_URL = database_url()
engine = create_engine(DATABASE_URL, connect_args=connect_args(DATABASE_URL))
SessionLocal = sessionmaker(engine)


def get_db() -> Iterator[Session]:
    with SessionLocal() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


# The async setup: one `AsyncSession` per request, through the async driver of the same database.
ASYNC_DATABASE_URL = async_url()
async_engine = create_async_engine(ASYNC_DATABASE_URL, connect_args=connect_args(DATABASE_URL))
# After commit, reading an attribute would reload it with I/O; in async code that lazy load
# cannot run implicitly and raises MissingGreenlet. Keep the loaded values instead.
AsyncSessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)


async def get_async_db() -> AsyncIterator[AsyncSession]:
    async with AsyncSessionLocal() as session:
        yield session


AsyncSessionDep = Annotated[AsyncSession, Depends(get_async_db)]

if DATABASE_URL.get_backend_name() == "sqlite":
    event.listen(engine, "connect", set_sqlite_pragmas)
    event.listen(async_engine.sync_engine, "connect", set_sqlite_pragmas)
