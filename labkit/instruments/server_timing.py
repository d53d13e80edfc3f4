"""``Server-Timing``: every response says how long the app took and how much of it was database.

The tutorial page sends the reader to the browser's DevTools Network panel to find slow API
calls. The panel shows the total time but not *where* it went, unless the server says so: the
``Server-Timing`` response header (a W3C standard) appears in the request's Timing tab. This
module adds it to every response of the lab's app, for instance::

    Server-Timing: db;dur=50.41;desc="database", total;dur=51.87

``db`` is the time spent inside the database driver's ``execute`` calls (the simulated latency
included), ``total`` the time from when the app started on the request to its response headers.
What a client waits beyond ``total`` is time the request spent queued before the app got to it,
such as behind a blocked event loop; that part no server-side timer can see.

The database clock is a per-request holder in a `ContextVar`. A context is copied into
threadpool threads and SQLAlchemy's greenlets, and the copy refers to the same holder, so the
statements of all three setups add to the right request's total.

The clock times the driver call itself, through SQLAlchemy's dialect events (``do_execute`` and
its two siblings), not through the engine's ``before_cursor_execute`` and
``after_cursor_execute``: an engine with listeners of its own makes every connection dispatch
all of its events (connect, begin, execute, rollback ...), which cost a request more than the
timing does. A wait the lab adds before a statement (labkit.instruments.latency) adds itself to
the clock with `count_database_time`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Engine, event

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "server-timing"


class _DatabaseClock:
    """Database time of one request, in seconds."""

    __slots__ = ("total_s",)

    def __init__(self) -> None:
        self.total_s = 0.0


_clock: ContextVar[_DatabaseClock | None] = ContextVar("labkit_database_clock", default=None)


def count_database_time(seconds: float) -> None:
    """Add `seconds` to the database time of the request running here (none: nothing to do)."""
    clock = _clock.get()
    if clock is not None:
        clock.total_s += seconds


def time_database(engine: Engine) -> None:
    """Add each statement's driver call on `engine` (sync, or an async engine's `.sync_engine`)
    to the database time of the request it runs for.

    Each listener makes the driver call itself, as the dialect would, and returns True to say
    so; outside a request (no clock) it returns False and leaves the call to the dialect.
    """
    dialect = engine.dialect
    event.listen(engine, "do_execute", _timed(dialect.do_execute))
    event.listen(engine, "do_executemany", _timed(dialect.do_executemany))
    event.listen(engine, "do_execute_no_params", _timed(dialect.do_execute_no_params))


def _timed(driver_call: Callable[..., object]) -> Callable[..., bool]:
    """A dialect event listener that makes `driver_call` with the event's arguments, timed."""

    def listener(*args: Any) -> bool:
        clock = _clock.get()
        if clock is None:
            return False
        started = time.perf_counter()
        try:
            driver_call(*args)
        finally:
            clock.total_s += time.perf_counter() - started
        return True

    return listener


def format_server_timing(db_s: float, total_s: float) -> str:
    """The header's value, durations in milliseconds as the standard asks."""
    return f'db;dur={db_s * 1000:.2f};desc="database", total;dur={total_s * 1000:.2f}'


def parse_server_timing(value: str) -> dict[str, float]:
    """``{"db": ms, "total": ms}`` from a ``Server-Timing`` value (metrics without dur are 0)."""
    metrics: dict[str, float] = {}
    for metric in value.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        duration = 0.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip() == "dur":
                duration = float(raw)
        if name:
            metrics[name] = duration
    return metrics


class ServerTimingMiddleware:
    """Pure ASGI middleware (no `BaseHTTPMiddleware`: that would run the app in another task and
    cut the `ContextVar` the database clock lives in) that adds ``Server-Timing`` to responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = _DatabaseClock()
        token = _clock.set(clock)
        start = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = format_server_timing(clock.total_s, time.perf_counter() - start)
                headers = [*message.get("headers", ()), (HEADER.encode(), value.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            _clock.reset(token)
