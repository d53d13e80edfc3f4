"""Simulated database latency: every statement waits inside the driver call, as a round trip would.

A local SQLite file answers in microseconds, so on its own it cannot show what an app does while
it waits on a database across a network. The lab adds the wait where the network would be: just
before each statement, on the same DBAPI cursor, it runs one extra SQL call that sleeps
(``lab_sleep(ms)``, a function registered on every new SQLite connection; ``pg_sleep`` on
PostgreSQL). The wait therefore happens in whatever runs the driver: the calling thread for
sqlite3 and psycopg, aiosqlite's worker thread, or asyncpg's awaited socket read. A blocked event
loop stays blocked, a threadpool thread is occupied, and an async driver frees the loop, exactly
as with a real remote database.

`threads_in_the_wait` names the threads inside such a wait at any moment, read from any thread
(`frame_in` finds where in its call a thread is).

COMMIT and ROLLBACK are not statements, and do not wait. Where the lab needs them to (the
ROLLBACK a session sends when it closes, in the timeline of a request's steps),
`transaction_end_waits` gives listeners that make them wait too.

Two ways to attach it:

- `add_latency(engine, ms)`: one engine the lab built, for good (labkit.app);
- `latency_everywhere(ms)`: every engine in the process, for a ``with`` block, through
  SQLAlchemy's class-level events (on `Engine` and `Pool`). That reaches engines someone else
  created, at import time or later, without a reference to any of them: ``python -m labkit
  probe`` slows a user's own app this way, and removes the listeners afterwards. Do not combine
  the two on one engine: its statements would wait twice.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import AdaptedConnection
from sqlalchemy.pool import Pool

from labkit.instruments.events import Listener, listening
from labkit.instruments.server_timing import count_database_time

_SLEEP_REGISTERED = "labkit_sleep"
"""Key in a pooled DBAPI connection's ``info``: ``lab_sleep`` is registered on it."""


def _sqlite_sleep(ms: float) -> int:
    time.sleep(ms / 1000)
    return 0


_PSYCOPG = f"{os.sep}psycopg{os.sep}"


def frame_in(stack: FrameType | None, match: Callable[[CodeType], bool]) -> FrameType | None:
    """The innermost frame of `stack` (a thread's top frame, as ``sys._current_frames()`` gives
    it) whose code `match` accepts, or None: where in its call that thread is."""
    while stack is not None and not match(stack.f_code):
        stack = stack.f_back
    return stack


def _in_a_database_call(code: CodeType) -> bool:
    return code is _sqlite_sleep.__code__ or _PSYCOPG in code.co_filename


def threads_in_the_wait() -> dict[int, str]:
    """The threads inside a database call at this moment, by ident, with their names.

    A thread is in the call while its stack holds the lab's wait on SQLite (``lab_sleep``, which
    sqlite3 or aiosqlite calls back from inside the statement) or any of psycopg's frames (it
    waits for the server's answer in the calling thread). asyncpg and psycopg's async mode
    await the socket instead: their wait is in no thread, and the loop runs other work. Call it
    from a thread of its own, so that it sees a blocked event loop too.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return {
        ident: names.get(ident, f"thread {ident}")
        for ident, top in sys._current_frames().items()
        if frame_in(top, _in_a_database_call) is not None
    }


def _sleep_call(backend: str, latency_ms: float) -> tuple[str, tuple[float, ...]] | None:
    """The SQL that waits `latency_ms` on `backend`, with its parameters; None if none is known."""
    if backend == "sqlite":
        return "SELECT lab_sleep(?)", (latency_ms,)
    if backend == "postgresql":
        # asyncpg takes $1-style parameters; a literal works for every driver and is a number
        # we formatted ourselves, never user input.
        return f"SELECT pg_sleep({latency_ms / 1000:.6f})", ()
    return None


def _register_sleep(dbapi_connection: Any, info: dict[Any, Any]) -> None:
    """Make ``lab_sleep`` callable on an SQLite connection (sqlite3, or aiosqlite's adapter)."""
    dbapi_connection.create_function("lab_sleep", 1, _sqlite_sleep)
    info[_SLEEP_REGISTERED] = True


def _check_latency(latency_ms: float) -> None:
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be >= 0, not {latency_ms}")


def add_latency(engine: Engine, latency_ms: float) -> None:
    """Make every statement on `engine` (a sync engine, or an async engine's `.sync_engine`) wait.

    The wait counts as the request's database time in ``Server-Timing``, as a round trip would.
    Does nothing for 0 ms, so the default engine carries no listener at all: any engine listener
    makes each of its connections dispatch every event, a cost at L = 0 the lab would add to
    what it measures.
    """
    _check_latency(latency_ms)
    if latency_ms == 0:
        return
    backend = engine.url.get_backend_name()
    call = _sleep_call(backend, latency_ms)
    if call is None:  # settings.database_url() admits only SQLite and PostgreSQL
        raise ValueError(f"no simulated latency for {backend!r}")
    sleep_sql, sleep_args = call
    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def register_sleep(dbapi_connection: Any, record: Any) -> None:
            _register_sleep(dbapi_connection, record.info)

    @event.listens_for(engine, "before_cursor_execute")
    def wait_first(
        _conn: Any, cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        started = time.perf_counter()
        cursor.execute(sleep_sql, sleep_args)
        # What a round trip would add to the request's database time (Server-Timing's db)
        count_database_time(time.perf_counter() - started)


@dataclass
class LatencyEverywhere:
    """What `latency_everywhere` did: its wait, and the databases it could not make wait."""

    latency_ms: float
    unsupported: set[str] = field(default_factory=set)
    """Backends (``mysql``, ...) whose statements ran without the wait: no sleep call known."""


@contextmanager
def latency_everywhere(latency_ms: float) -> Iterator[LatencyEverywhere]:
    """Make every statement on every engine in the process wait `latency_ms`, for the block.

    Class-level listeners reach engines and pools that exist already and those created inside
    the block. A connection opened before the block has no ``lab_sleep`` yet: its first
    statement registers it (``info`` remembers which connections have it). The listeners are
    removed on the way out, so one test's latency does not leak into the next.
    """
    _check_latency(latency_ms)
    done = LatencyEverywhere(latency_ms)
    if latency_ms == 0:
        yield done
        return
    calls = {backend: _sleep_call(backend, latency_ms) for backend in ("sqlite", "postgresql")}

    def register_sleep(dbapi_connection: Any, record: Any) -> None:
        if hasattr(dbapi_connection, "create_function"):  # only SQLite's connections have it
            _register_sleep(dbapi_connection, record.info)

    def wait_first(
        conn: Any, cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        backend = conn.dialect.name
        call = calls.get(backend)
        if call is None:
            done.unsupported.add(backend)
            return
        if backend == "sqlite":
            pooled = conn.connection  # the pool's proxy; its info lives as long as the DBAPI one
            if not pooled.info.get(_SLEEP_REGISTERED):
                _register_sleep(pooled.dbapi_connection, pooled.info)
        cursor.execute(*call)

    with listening(
        [(Pool, "connect", register_sleep), (Engine, "before_cursor_execute", wait_first)]
    ):
        yield done


def _round_trip(latency_ms: float) -> Callable[[Connection], None]:
    """Wait `latency_ms` where a driver waits for a database across a network: in the calling
    thread for a sync driver, awaited on the event loop for an async one (which keeps the loop
    free, as a real round trip would)."""
    seconds = latency_ms / 1000

    def wait(conn: Connection) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if isinstance(dbapi_connection, AdaptedConnection):
            dbapi_connection.run_async(lambda _driver: asyncio.sleep(seconds))
        else:
            time.sleep(seconds)

    return wait


def transaction_end_waits(engine: Engine, latency_ms: float) -> list[Listener]:
    """Listeners that make each COMMIT and ROLLBACK on `engine` wait `latency_ms`.

    `add_latency` delays statements only; on a database across a network, the ROLLBACK a
    session sends when it closes is a round trip too.
    Without it, closing a session on SQLite takes microseconds, and which of two steps that
    close comes first would be a race rather than something to measure.
    """
    if latency_ms == 0:
        return []
    wait = _round_trip(latency_ms)
    return [(engine, "commit", wait), (engine, "rollback", wait)]
