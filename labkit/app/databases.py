"""The shop app's two setups, made again on a database and with options of the lab's choosing.

`SyncDatabase.create` and `AsyncDatabase.create` build what ``labkit.shop.database`` builds at
import (engine, session factory, session dependency), on another URL (a notebook's own SQLite
file, a scratch PostgreSQL database) and with `EngineOptions` (pool size, simulated latency).
Their sessions count themselves in a `SessionLedger`, and their engines carry the lab's
instruments (simulated latency, ``Server-Timing``'s database clock). The lab swaps them into a
copy of the shop app with ``app.dependency_overrides`` (labkit.app.create), so
notebooks can make fresh ones side by side without touching the shop app's code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, get_type_hints

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from labkit.instruments.latency import add_latency
from labkit.instruments.ledger import LedgerSession, SessionLedger
from labkit.instruments.server_timing import time_database
from labkit.settings import async_url, database_url, ensure_sqlite_dir
from labkit.shop.database import connect_args, set_sqlite_pragmas


@dataclass(frozen=True)
class EngineOptions:
    """What a notebook varies about an engine. The defaults are SQLAlchemy's own, and no wait."""

    latency_ms: float = 0.0
    """Simulated database latency: how long every statement waits (labkit.instruments.latency)."""
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_pre_ping: bool = False
    echo: bool = False
    no_prepared_statements: bool = False
    """Behind PgBouncer's transaction pooling: see `without_prepared_statements`."""
    application_name: str | None = None
    """On PostgreSQL, what the server shows for each connection in ``pg_stat_activity``: which
    process opened it, where several share one database."""
    sqlite_timeout_s: float | None = None
    """On SQLite, sqlite3's `timeout`: how long a writer waits for another's write lock before
    "database is locked". None keeps the shop app's (``SQLITE_TIMEOUT_S``, sqlite3's 5 s)."""

    @property
    def pool(self) -> int:
        """The most connections the pool lends at once: ``pool_size + max_overflow``."""
        return self.pool_size + self.max_overflow

    def engine_kwargs(self, url: URL) -> dict[str, Any]:
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.pool_timeout,
            "pool_pre_ping": self.pool_pre_ping,
            "echo": self.echo,
            "connect_args": {
                **connect_args(url),
                **self._sqlite_timeout(url),
                **self._application_name(url),
                **(without_prepared_statements(url) if self.no_prepared_statements else {}),
            },
        }

    def _sqlite_timeout(self, url: URL) -> dict[str, Any]:
        if self.sqlite_timeout_s is None or url.get_backend_name() != "sqlite":
            return {}
        return {"timeout": self.sqlite_timeout_s}

    def _application_name(self, url: URL) -> dict[str, Any]:
        if self.application_name is None or url.get_backend_name() != "postgresql":
            return {}
        if url.get_driver_name() == "asyncpg":  # a startup setting, not a connect() argument
            return {"server_settings": {"application_name": self.application_name}}
        return {"application_name": self.application_name}  # psycopg, sync and async


def without_prepared_statements(url: URL) -> dict[str, Any]:
    """``connect_args`` that keep a driver from leaving named prepared statements on a server
    connection, which transaction pooling hands to any client's next transaction.

    - asyncpg: ``statement_cache_size=0`` (an argument of ``asyncpg.connect``). asyncpg then
      prepares every statement unnamed, SQLAlchemy's own included (its dialect calls
      ``prepare()`` without a name), and parses it again at each execution, so nothing stays
      on the server between transactions. SQLAlchemy's statement cache
      (``prepared_statement_cache_size``) can stay on: it keeps the statement's description,
      not a name on the server. A ``prepared_statement_name_func`` must not be added: it
      names the statements again, and each one stays on the server connection it was
      prepared on, which after a move is not the one asyncpg later closes it on.
    - psycopg: ``prepare_threshold=None``: never prepare (by default a query is prepared on
      its sixth run on a connection, as ``_pg3_0``, ``_pg3_1``, ..., counted per connection).
    """
    if url.get_backend_name() != "postgresql":
        return {}
    if url.get_driver_name() == "asyncpg":
        return {"statement_cache_size": 0}
    return {"prepare_threshold": None}


def _prepare(engine: Engine, options: EngineOptions) -> None:
    if engine.url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", set_sqlite_pragmas)  # as the shop app's engine does
    time_database(engine)  # the simulated wait adds itself to the same clock
    add_latency(engine, options.latency_ms)


@dataclass
class SyncDatabase:
    """The sync setup: `engine`, `SessionLocal` and the `get_db` dependency."""

    engine: Engine
    SessionLocal: sessionmaker[Session]
    ledger: SessionLedger
    options: EngineOptions

    @classmethod
    def create(
        cls, url: str | URL | None = None, options: EngineOptions | None = None
    ) -> SyncDatabase:
        """Build the setup for `url` (default: `DATABASE_URL`) with `options`."""
        options = options or EngineOptions()
        sync_url = database_url(url)
        ensure_sqlite_dir(sync_url)
        engine = create_engine(sync_url, **options.engine_kwargs(sync_url))
        _prepare(engine, options)
        ledger = SessionLedger("sync")
        SessionLocal: sessionmaker[Session] = sessionmaker(
            engine, class_=LedgerSession, info={"ledger": ledger}
        )
        return cls(engine, SessionLocal, ledger, options)

    def get_db(self) -> Iterator[Session]:
        """One session per request, closed (and its connection returned) when the request ends."""
        with self.SessionLocal() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass
class AsyncDatabase:
    """The async setup: `engine` (async driver), `AsyncSessionLocal` and `get_async_db`."""

    engine: AsyncEngine
    AsyncSessionLocal: async_sessionmaker[AsyncSession]
    ledger: SessionLedger
    options: EngineOptions

    @classmethod
    def create(
        cls, url: str | URL | None = None, options: EngineOptions | None = None
    ) -> AsyncDatabase:
        """Build the setup for `url` (default: `DATABASE_URL`, through its async driver)."""
        options = options or EngineOptions()
        aurl = async_url(url)
        ensure_sqlite_dir(aurl)
        engine = create_async_engine(aurl, **options.engine_kwargs(aurl))
        _prepare(engine.sync_engine, options)
        ledger = SessionLedger("async")
        AsyncSessionLocal = async_sessionmaker(
            engine,
            expire_on_commit=False,  # as the shop app's: no implicit reload (MissingGreenlet)
            sync_session_class=LedgerSession,
            info={"ledger": ledger},
        )
        return cls(engine, AsyncSessionLocal, ledger, options)

    async def get_async_db(self) -> AsyncIterator[AsyncSession]:
        """One `AsyncSession` per request, closed when the request ends."""
        async with self.AsyncSessionLocal() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def _resolve_annotations(*functions: Callable[..., object]) -> None:
    """Replace the string annotations of `functions` (this module's ``from __future__ import
    annotations``) by what they name.

    FastAPI reads an override's signature again on every request that uses it, and evaluates
    each string annotation with ``eval`` when it does: for a session dependency that costs more
    than the rest of its signature, on every request of the lab's app and never of the
    shop app's, whose annotations are objects already.
    """
    for function in functions:
        function.__annotations__.update(get_type_hints(function))


_resolve_annotations(SyncDatabase.get_db, AsyncDatabase.get_async_db)
