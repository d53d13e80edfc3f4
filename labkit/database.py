"""The two session setups of the lab, written as a FastAPI app writes them.

Sync: an `Engine`, a `sessionmaker` (`SessionLocal`) and a generator dependency `get_db` that
opens one `Session` per request and closes it when the request is done. Async: the same with
`create_async_engine`, `async_sessionmaker` and `get_async_db`. They are built by factories
(`SyncDatabase.create`, `AsyncDatabase.create`) rather than at import, so a notebook can make
fresh ones with other options (pool size, simulated latency, another database) side by side.

Every session the lab makes is a `LabSession`, which reports its opening and closing to a
`SessionLedger`: that is how the lab shows one session per request, and proves none leaks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from .latency import add_latency
from .settings import async_url, database_url, ensure_sqlite_dir
from .timing import time_database

log = logging.getLogger("labkit.sessions")

SQLITE_BUSY_TIMEOUT_MS = 5_000
"""How long an SQLite writer waits for another's lock before failing ("database is locked")."""


@dataclass
class SessionLedger:
    """Counts the sessions a factory opened and closed; `open` is what would be a leak."""

    opened: int = 0
    closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def record_open(self) -> int:
        """Count a new session; its number is its place in this ledger (1, 2, ...)."""
        with self._lock:  # sessions open and close on threadpool threads too
            self.opened += 1
            return self.opened

    def record_close(self) -> None:
        with self._lock:
            self.closed += 1


class LabSession(Session):
    """A plain `Session` that logs when it opens and closes, and counts itself in a ledger.

    Closing twice counts once: `close()` may be called again by a context manager after a route
    already closed the session.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.number = self._ledger().record_open()
        self._counted_open = True
        log.info("session %d opened", self.number)

    def _ledger(self) -> SessionLedger:
        return self.info["ledger"]

    def close(self) -> None:
        super().close()
        if self._counted_open:
            self._counted_open = False
            self._ledger().record_close()
            log.info("session %d closed", self.number)


@dataclass(frozen=True)
class EngineOptions:
    """What a notebook varies about an engine. The defaults are SQLAlchemy's own."""

    latency_ms: float = 0.0
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_pre_ping: bool = False
    echo: bool = False

    def engine_kwargs(self, url: URL) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.pool_timeout,
            "pool_pre_ping": self.pool_pre_ping,
            "echo": self.echo,
        }
        if url.get_backend_name() == "sqlite":
            # sqlite3 refuses a connection made in another thread by default, and the pool hands
            # connections to whichever threadpool thread serves the request. SQLAlchemy 2.x sets
            # this itself for SQLite files; it is spelled out because every FastAPI tutorial
            # shows it, and notebook 01 shows the error it prevents.
            kwargs["connect_args"] = {"check_same_thread": False}
        return kwargs


def _tune_sqlite(engine: Engine) -> None:
    """WAL lets readers run beside a writer; busy_timeout makes a writer wait instead of failing."""

    @event.listens_for(engine, "connect")
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()


def _prepare(engine: Engine, options: EngineOptions) -> None:
    if engine.url.get_backend_name() == "sqlite":
        _tune_sqlite(engine)
    # Before the latency listener: listeners run in the order they were added, so the
    # simulated wait counts as database time in the Server-Timing header.
    time_database(engine)
    add_latency(engine, options.latency_ms)


@dataclass
class SyncDatabase:
    """The sync setup: `engine`, `SessionLocal` and the `get_db` dependency."""

    engine: Engine
    SessionLocal: sessionmaker[Session]
    ledger: SessionLedger

    @classmethod
    def create(cls, url: str | URL | None = None, **options: Any) -> SyncDatabase:
        """Build the setup for `url` (default: `DATABASE_URL`) with :class:`EngineOptions`."""
        opts = EngineOptions(**options)
        sync_url = database_url(url)
        ensure_sqlite_dir(sync_url)
        engine = create_engine(sync_url, **opts.engine_kwargs(sync_url))
        _prepare(engine, opts)
        ledger = SessionLedger()
        SessionLocal = sessionmaker(engine, class_=LabSession, info={"ledger": ledger})
        return cls(engine, SessionLocal, ledger)

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

    @classmethod
    def create(cls, url: str | URL | None = None, **options: Any) -> AsyncDatabase:
        """Build the setup for `url` (default: `DATABASE_URL`, through its async driver)."""
        opts = EngineOptions(**options)
        aurl = async_url(url)
        ensure_sqlite_dir(aurl)
        engine = create_async_engine(aurl, **opts.engine_kwargs(aurl))
        _prepare(engine.sync_engine, opts)
        ledger = SessionLedger()
        AsyncSessionLocal = async_sessionmaker(
            engine,
            # After commit, reading an attribute would reload it with I/O; in async code that
            # lazy load cannot run implicitly and raises MissingGreenlet. Keep loaded values.
            expire_on_commit=False,
            sync_session_class=LabSession,
            info={"ledger": ledger},
        )
        return cls(engine, AsyncSessionLocal, ledger)

    async def get_async_db(self) -> AsyncIterator[AsyncSession]:
        """One `AsyncSession` per request, closed when the request ends."""
        async with self.AsyncSessionLocal() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
