"""Pool stalls: a checkout waits for a connection that only the waiter could let come back.

A sync session waits for a pooled connection on the thread that asked: the event loop's own
thread in the blocking setup (a sync `Session` in ``async def`` routes), one of AnyIO's worker
threads in the threadpool setup. The requests holding every connection need that loop, or a
worker thread, before theirs can go back. Once enough requests are in flight, nothing moves
until ``pool_timeout``; then the waiter fails (503) and the others go on.

`stall_run` loads one setup of a `create_app` app with a watch on: a thread of its own samples
every thread's stack, and once a checkout has waited half of ``pool_timeout`` it takes a
`Stall`, which says who waits in the pool and where the requests holding the connections are,
when the most threads waited (the latest such moment) before the waiter gave up. The watch
also notes on which thread the session dependency (`get_db`) opened and closed each session.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.bench.load import engine_for, run_load
from labkit.bench.results import LoadResult
from labkit.instruments.events import listening
from labkit.instruments.latency import frame_in
from labkit.instruments.watch import collect_log
from labkit.shop import database as shop_database


@dataclass(eq=False)  # one per request, kept in a set by identity
class RequestSeen:
    """One request, as the watch saw it."""

    opened_on: int | None = None
    """The thread `get_db` opened the session on (``threading.get_ident()``)."""
    closed_on: int | None = None
    """The thread `get_db`'s exit started on, which closes the session."""
    holds: bool = False
    """A pooled connection is checked out for it, and not back yet."""
    answered: bool = False
    """The last of its response has been handed to the server."""


_current: ContextVar[RequestSeen | None] = ContextVar("labkit_request_seen", default=None)


class _SeeRequests:
    """Outermost ASGI middleware: a `RequestSeen` per request, which `get_db` and the pool's
    events find through a context variable (AnyIO runs worker threads in a copy of it)."""

    def __init__(self, app: ASGIApp, in_flight: set[RequestSeen]) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = RequestSeen()

        async def watched_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                request.answered = True

        token = _current.set(request)
        self.in_flight.add(request)
        try:
            await self.app(scope, receive, watched_send)
        finally:
            self.in_flight.discard(request)
            _current.reset(token)


def _noting_get_db(database: SyncDatabase, seen: list[RequestSeen]) -> Callable[..., Any]:
    """The lab's `get_db` (one session per request), noting the threads it runs on."""

    def get_db() -> Iterator[Session]:
        request = _current.get() or RequestSeen()
        request.opened_on = threading.get_ident()
        seen.append(request)
        with database.SessionLocal() as session:
            try:
                yield session
            finally:
                request.closed_on = threading.get_ident()

    return get_db


def _noting_holds(value: bool) -> Callable[..., None]:
    """A pool event listener (checkout, checkin): whether the current request holds one."""

    def note(*_args: Any) -> None:
        request = _current.get()
        if request is not None:
            request.holds = value

    return note


@dataclass(frozen=True)
class Stall:
    """The process while a checkout waited, from half of ``pool_timeout`` on, when the most
    worker threads waited in the pool (the latest such moment)."""

    loop_waits: bool
    """The event loop's own thread waits in the pool."""
    threads_wait: int
    """Worker threads waiting in the pool."""
    threads_lent: int
    """Worker threads AnyIO's default limiter has lent (to ``def`` routes, answers to
    validate, sync dependencies' setup), of `thread_limit`."""
    thread_limit: int
    holders: int
    """Requests holding a pooled connection."""
    holders_answered: int
    """... of them, those whose response had gone out."""
    holders_closing: int
    """... of them, those whose `get_db` exit had started."""


def _pool_checkout(code: CodeType) -> bool:
    """SQLAlchemy's pool getting a connection: where a checkout waits."""
    return code.co_name == "_do_get" and "sqlalchemy" in code.co_filename


@contextmanager
def _watch_stalls(
    loop_thread: int, in_flight: set[RequestSeen], after_s: float, every_s: float = 0.01
) -> Iterator[list[Stall]]:
    """Sample every thread's stack every `every_s`. A checkout that has waited `after_s` while
    none had starts a stall; its `Stall` is taken again at each sample while that checkout still
    waits, and kept unless it has fewer worker threads waiting: a stall can take a while to
    settle (the last threads reach the pool after the first), and near ``pool_timeout`` the
    first waiters give up one by one, so its fullest moment, not its last, shows it whole."""
    stalls: list[Stall] = []
    limiter = anyio.to_thread.current_default_thread_limiter()  # the loop's: call it there
    stop = threading.Event()

    def state(long: list[int], waiting: dict[int, tuple[FrameType, float]]) -> Stall:
        holders = [r for r in list(in_flight) if r.holds]
        return Stall(
            loop_waits=loop_thread in long,
            threads_wait=len([t for t in waiting if t != loop_thread]),
            threads_lent=int(limiter.borrowed_tokens),
            thread_limit=int(limiter.total_tokens),
            holders=len(holders),
            holders_answered=sum(r.answered for r in holders),
            holders_closing=sum(r.closed_on is not None for r in holders),
        )

    def watch() -> None:
        waiting: dict[int, tuple[FrameType, float]] = {}  # thread -> its checkout, since when
        first: tuple[int, FrameType] | None = None  # the checkout that started this stall
        stalled = False
        while not stop.wait(every_s):
            now = time.perf_counter()
            seen = {}
            for thread, stack in sys._current_frames().items():
                wait = frame_in(stack, _pool_checkout)
                if wait is not None:
                    before = waiting.get(thread)
                    seen[thread] = before if before and before[0] is wait else (wait, now)
            waiting = seen
            long = [thread for thread, (_wait, since) in waiting.items() if now - since >= after_s]
            if first is not None:
                thread, wait = first
                if thread in waiting and waiting[thread][0] is wait:
                    now_seen = state(long, waiting)
                    if now_seen.threads_wait >= stalls[-1].threads_wait:
                        stalls[-1] = now_seen
                else:
                    first = None
            if long and not stalled:
                oldest = min(long, key=lambda thread: waiting[thread][1])
                first = (oldest, waiting[oldest][0])
                stalls.append(state(long, waiting))
            stalled = bool(long)
        waiting.clear()  # drop the frames
        first = None

    watcher = threading.Thread(target=watch, name="labkit-stall-watch", daemon=True)
    watcher.start()
    try:
        yield stalls
    finally:
        stop.set()
        watcher.join()


@dataclass
class StallRun:
    """A load run with the stall watch on: its result, its stalls, and its requests."""

    result: LoadResult
    stalls: list[Stall]
    loop_thread: int
    requests: list[RequestSeen] = field(repr=False)

    @property
    def opened_off_loop(self) -> int:
        """Sessions `get_db` opened on a worker thread, not on the event loop's."""
        return sum(r.opened_on not in (None, self.loop_thread) for r in self.requests)

    @property
    def closed_off_loop(self) -> int:
        """Sessions whose `get_db` exit ran on a worker thread, not on the event loop's."""
        return sum(r.closed_on not in (None, self.loop_thread) for r in self.requests)


async def stall_run(
    database_url: str | URL | None,
    setup: str,
    *,
    clients: int,
    requests: int,
    options: EngineOptions,
    threads: int | None = None,
) -> StallRun:
    """`requests` to `setup`'s route of a fresh `create_app` app, from `clients` at once.

    A checkout that has waited half of ``options.pool_timeout`` is taken for a stall: with no
    simulated latency a pooled connection comes back within milliseconds, unless something
    keeps it. The app's one log line per 503 is kept out of the output (the result counts them).
    """
    app = create_app(database_url, options, threads=threads)
    in_flight: set[RequestSeen] = set()
    seen: list[RequestSeen] = []
    app.fastapi.add_middleware(_SeeRequests, in_flight=in_flight)
    app.fastapi.dependency_overrides[shop_database.get_db] = _noting_get_db(app.sync_db, seen)
    engine = engine_for(app, setup)
    if engine is None:
        raise ValueError(f"not a setup: {setup!r}")
    pool_of = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    holds = [(pool_of, "checkout", _noting_holds(True)), (pool_of, "checkin", _noting_holds(False))]
    loop_thread = threading.get_ident()
    with collect_log("labkit.shop.errors"):
        async with lab_client(app) as client:
            with (
                listening(holds),
                _watch_stalls(loop_thread, in_flight, options.pool_timeout / 2) as stalls,
            ):
                result = await run_load(
                    client, setup, requests=requests, concurrency=clients, app=app
                )
    return StallRun(result, stalls, loop_thread, seen)
