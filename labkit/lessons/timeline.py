"""What the lesson apps log, kept in order on one clock: the `Timeline`.

The lesson apps log each step they take (logger ``labkit.lessons``): what the route, the
dependency, the pool and the server did. A `Timeline` is a logging handler that keeps those
steps with the ``time.perf_counter()`` each came at, one clock for every thread of the process,
so a notebook can show what the client had already received when, say, a commit failed.
`lesson_lifespan` attaches a timeline while an app serves; `_LogResponse` logs when the response
has gone out, and `_pool_logged` each checkout and return of a pooled connection.
"""

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.types import ASGIApp

from labkit.app.create import thread_limit
from labkit.instruments.events import listening
from labkit.instruments.response_watch import ResponseWatch
from labkit.instruments.watch import queue_pool

log = logging.getLogger("labkit.lessons")


class Timeline(logging.Handler):
    """What the lesson apps logged while serving requests, one line per step, in order.

    Each step keeps the ``time.perf_counter()`` it came at: one clock for every thread of the
    process, so worker threads, the event loop and the pool's events can be put on one line.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.steps: list[tuple[str, float]] = []

    @property
    def events(self) -> list[str]:
        """The steps logged since the last `clear`, in the order they happened."""
        return [step for step, _at in self.steps]

    def emit(self, record: logging.LogRecord) -> None:
        self.note(record.getMessage())

    def note(self, step: str) -> None:
        """Add a step of the caller's own, on the same clock."""
        self.steps.append((step, time.perf_counter()))  # atomic: threadpool threads log too

    def clear(self) -> None:
        self.steps.clear()

    def show(self) -> None:
        for number, step in enumerate(self.events, 1):
            print(f"{number}. {step}")

    def since_start(self, start: str) -> dict[str, float]:
        """Each step's time in ms since step `start`. One request's steps only: a step noted
        twice is an error, not something to average away."""
        names = self.events
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"noted more than once: {repeated}")
        started = dict(self.steps)[start]
        return {step: (at - started) * 1000 for step, at in self.steps}


def _describe(exc: Exception) -> str:
    """An error in one line: a validation error's fields and messages, else the message's start.

    FastAPI's validation errors end with the route's file and line, which are no part of what
    went wrong.
    """
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']} (got {error.get('input')!r})"
            for error in errors()
        )
    return str(exc).splitlines()[0]


class _LogResponse(ResponseWatch):
    """ASGI middleware: logs when the response has gone out, and any error the app raised.

    A real server (uvicorn) logs an error raised after the response was sent; the client never
    hears of it. Logging both here lets a notebook show which came first. Given an `engine`, it
    also logs how many of its pooled connections are checked out as the response goes out and
    once the request has ended (every dependency closed).
    """

    def __init__(self, app: ASGIApp, engine: Engine | None = None) -> None:
        super().__init__(app)
        self.engine = engine

    def _in_use(self) -> str:
        if self.engine is None:
            return ""
        return f" (connections checked out: {queue_pool(self.engine.pool).checkedout()})"

    def body_sent(self, status: int) -> None:
        log.info("server: response sent to the client, status %d%s", status, self._in_use())

    def raised(self, exc: Exception) -> None:
        log.info("server: the app raised %s: %s", type(exc).__name__, _describe(exc))

    def request_ends(self) -> None:
        if self.engine is not None:
            log.info("server: request ended%s", self._in_use())


def _pool_logged(engine: Engine) -> AbstractContextManager[None]:
    """Log each time a pooled connection of `engine` is checked out or returned."""

    def checked_out(*_args: object) -> None:
        log.info("pool: a connection is checked out")

    def returned(*_args: object) -> None:
        log.info("pool: the connection goes back to the pool")

    return listening([(engine, "checkout", checked_out), (engine, "checkin", returned)])


def lesson_lifespan(
    timeline: Timeline | None = None, threads: int | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Keep what the lessons log in `timeline`, and set AnyIO's thread limit, while serving."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if timeline is not None:
            log.addHandler(timeline)
        level = log.level
        log.setLevel(logging.INFO)
        try:
            async with thread_limit(threads):
                yield
        finally:
            if timeline is not None:
                log.removeHandler(timeline)
            log.setLevel(level)

    return lifespan
