"""Simulated database latency: every statement waits inside the driver call, as a round trip would.

A local SQLite file answers in microseconds, so on its own it cannot show what an app does while
it waits on a database across a network. The lab adds the wait where the network would be: just
before each statement, on the same DBAPI cursor, it runs one extra SQL call that sleeps
(``lab_sleep(ms)``, a function registered on every new SQLite connection; ``pg_sleep`` on
PostgreSQL). The wait therefore happens in whatever runs the driver: the calling thread for
sqlite3 and psycopg, aiosqlite's worker thread, or asyncpg's awaited socket read. A blocked event
loop stays blocked, a threadpool thread is occupied, and an async driver frees the loop, exactly
as with a real remote database.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event


def _sqlite_sleep(ms: float) -> int:
    time.sleep(ms / 1000)
    return 0


def add_latency(engine: Engine, latency_ms: float) -> None:
    """Make every statement on `engine` (a sync engine, or an async engine's `.sync_engine`) wait.

    Does nothing for 0 ms, so the default engine carries no listener at all.
    """
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be >= 0, not {latency_ms}")
    if latency_ms == 0:
        return
    backend = engine.url.get_backend_name()
    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def register_sleep(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.create_function("lab_sleep", 1, _sqlite_sleep)

        sleep_sql = "SELECT lab_sleep(?)"
        sleep_args: tuple[float, ...] = (latency_ms,)
    elif backend == "postgresql":
        # asyncpg takes $1-style parameters; a literal works for both drivers and is a number
        # we formatted ourselves, never user input.
        sleep_sql = f"SELECT pg_sleep({latency_ms / 1000:.6f})"
        sleep_args = ()
    else:  # settings.database_url() admits only the two backends above
        raise ValueError(f"no simulated latency for {backend!r}")

    @event.listens_for(engine, "before_cursor_execute")
    def wait_first(
        _conn: Any, cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        cursor.execute(sleep_sql, sleep_args)
