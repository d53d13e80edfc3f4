"""What an abandoned request leaves behind, seen from outside the app.

`watching_pool` records what became of each pooled connection (`PoolFates`, from pool events:
given back, or invalidated and why); `server_log` collects what the server logged (uvicorn,
SQLAlchemy, asyncio, Python warnings) by message; `server_backends` and `settled_backends` count
the connections PostgreSQL still holds for an ``application_name``.
"""

import asyncio
import gc
import logging
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from labkit.infra.postgres import libpq_url
from labkit.instruments.events import listening
from labkit.instruments.watch import collect_log, queue_pool


@dataclass
class PoolFates:
    """What became of an engine's pooled connections, from its pool events."""

    checked_out: int = 0
    returned: int = 0
    """Checked in with the connection still open: reset, and kept for the next request."""
    invalidated: Counter[str] = field(default_factory=Counter)
    """Invalidated, by the exception that caused it: the connection is closed, and its slot
    in the pool is free again."""
    detached_closed: int = 0
    """Connections closed outside the pool (``close_detached``), as the garbage collector does
    with an async connection it finds still checked out."""
    connected: int = 0
    closed: int = 0
    open_before: int = 0
    """Connections open when the watch began (idle in the pool, or checked out)."""
    counting: bool = True
    """False while the lab itself uses the pool (`warm`): only connects and closes count."""

    @property
    def open(self) -> int:
        """Connections the pool has open now: idle in it, or checked out."""
        return self.open_before + self.connected - self.closed - self.detached_closed


@contextmanager
def watching_pool(engine: Engine) -> Iterator[PoolFates]:
    """Count `engine`'s checkouts, checkins and invalidations in the block (any thread)."""
    pool = queue_pool(engine.pool)
    fates = PoolFates(open_before=pool.checkedin() + pool.checkedout())
    lock = threading.Lock()

    def checkout(*_args: Any) -> None:
        if fates.counting:
            with lock:
                fates.checked_out += 1

    def checkin(dbapi_connection: Any, _record: Any) -> None:
        # None: an invalidated connection's slot coming back
        if fates.counting and dbapi_connection is not None:
            with lock:
                fates.returned += 1

    def invalidate(_dbapi_connection: Any, _record: Any, exception: BaseException | None) -> None:
        with lock:
            fates.invalidated[type(exception).__name__ if exception else "invalidate()"] += 1

    def close_detached(*_args: Any) -> None:
        with lock:
            fates.detached_closed += 1

    def connect(*_args: Any) -> None:
        with lock:
            fates.connected += 1

    def close(*_args: Any) -> None:
        with lock:
            fates.closed += 1

    listeners = [
        (engine, "checkout", checkout),
        (engine, "checkin", checkin),
        (engine, "invalidate", invalidate),
        (engine, "close_detached", close_detached),
        (engine, "connect", connect),
        (engine, "close", close),
    ]
    with listening(listeners):
        yield fates


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+|\d+\.\d+\.\d+\.\d+:\d+|\(\d+\)")


class ServerLog:
    """What the server logs, by message (first line, addresses masked; for an error logged with
    its exception, the exception's class too)."""

    def __init__(self) -> None:
        self.said: Counter[str] = Counter()

    def keep(self, name: str, records: list[logging.LogRecord]) -> None:
        """Count `records` and let go of them: an exception's traceback would keep alive what
        its frames hold (a session, a connection) past the collector's run."""
        for record in records:
            message = _first_line(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__})"
            self.said[f"{name}: {message}"] += 1
            record.exc_info = record.args = None
        records.clear()

    @contextmanager
    def uvicorn(self) -> Iterator[None]:
        """uvicorn's log, for a block inside `uvicorn_in_process`: uvicorn sets up its loggers as it
        starts, and a handler added before would be gone."""
        with collect_log("uvicorn.error") as records:
            try:
                yield
            finally:
                self.keep("uvicorn", records)


@contextmanager
def server_log() -> Iterator[ServerLog]:
    """Keep what SQLAlchemy, asyncio and Python's warnings say in the block (uvicorn's through
    `ServerLog.uvicorn`). On the way out the cycle collector runs, inside the block, so that
    what it finds unfinished (an asyncio task or future, a connection never checked in) is
    logged here, not later in another cell: SQLAlchemy's "The garbage collector is trying to
    clean up non-checked-in connection" is such a message, and a warning too."""
    log = ServerLog()
    with (
        collect_log("sqlalchemy") as sqlalchemy_log,
        collect_log("asyncio") as asyncio_log,
        warnings.catch_warnings(record=True) as warned,
    ):
        warnings.simplefilter("always")
        try:
            yield log
        finally:
            log.keep("sqlalchemy", sqlalchemy_log)
            log.keep("asyncio", asyncio_log)
            # Generations 0 and 1 hold everything made while the collector was paused
            # (`abandon`): nothing was promoted meanwhile. A full collection of a kernel's
            # heap would take a good part of a second.
            gc.collect(1)
            log.keep("sqlalchemy", sqlalchemy_log)
            log.keep("asyncio", asyncio_log)
            for warning in warned:
                log.said[f"{warning.category.__name__}: {_first_line(str(warning.message))}"] += 1


_COROUTINE = re.compile(r"coro=<([\w.]+)\(")


def _first_line(message: str) -> str:
    """The message's first line, addresses masked; for asyncio's word on a task, the task's
    coroutine too (its next line names it)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    coroutine = _COROUTINE.search(message)
    if coroutine:
        first += f" ({coroutine.group(1)})"
    return _ADDRESS.sub("…", first)[:160]


def server_backends(url: URL, application_name: str) -> int:
    """Connections PostgreSQL holds open for `url`'s database under `application_name`."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()",
            (url.database, application_name),
        ).fetchone()
    return int(row[0]) if row else 0


async def settled_backends(
    url: URL, application_name: str, expected: int, timeout_s: float = 2.0
) -> int:
    """`server_backends`, once it equals `expected` or `timeout_s` has passed: a backend ends
    a moment after its client has closed the connection."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = await asyncio.to_thread(server_backends, url, application_name)
        if count == expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.02)
