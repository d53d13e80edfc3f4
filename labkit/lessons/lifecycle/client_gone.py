"""The client goes away mid-request: what the route, the session dependency and the pool see.

A request can end early in two ways. The **client** can leave: a closed browser tab, an
``httpx`` timeout, a load balancer giving up. Or the **app** can give up on its own work: a
time limit around a statement (``asyncio.timeout``), or a timeout middleware that cancels the
whole request. `abandon_each` serves a small app (`client_gone_app`) for each `Abandonment`
under uvicorn, over a real socket, sends requests that wait on the database (each statement
waits the simulated latency, labkit.instruments.latency), and ends each one early in one of
those ways, a batch of requests at a time. Then it reports, in an `Abandoned`, what was left behind:

- what the route saw (it returned, or an exception reached it) and what reached the session
  dependency's ``yield`` (nothing, or the exception), noted by `Notes`; in ``async def`` code,
  also whether an ``await`` right after the exception ran or was cancelled again (AnyIO's
  cancellation repeats at every ``await`` until its scope is left, unless shielded);
- what became of each pooled connection (`PoolFates`, from pool events): given back and reset,
  or invalidated (closed, its slot freed) and why;
- what is still checked out once the app has finished every request, before and after Python's
  cycle collector has run, and how many sessions were never closed (the session ledger);
- on PostgreSQL, how many server backends the engine's connections still hold
  (``pg_stat_activity``, by ``application_name``), and how many once the engine is disposed;
- what the server logged: uvicorn, SQLAlchemy, asyncio, and Python warnings, by message.

What decides the outcome, in the pinned versions (checked in their source):

- uvicorn (``h11_impl.py``): a disconnect sets ``disconnected`` on the request; ``send`` then
  returns without sending, and nothing cancels the app. Starlette and FastAPI read ``receive``
  for a plain response only if the route does: the request runs to its end, and its answer is
  dropped.
- SQLAlchemy 2.1: a cancellation (``CancelledError``) inside a statement counts as a disconnect
  (``Connection._handle_dbapi_exception``): the connection is invalidated, closed with the
  driver's ``terminate()``, which force-closes it if its graceful close is cancelled too
  (``AsyncAdapt_terminate``, ``Pool._close_connection``), and its pool slot is given back.
  With aiosqlite, the polite close given up on stays pending for good (it waits for the worker
  thread the force-close stopped), and asyncio logs "Task was destroyed but it is pending!"
  when the collector frees it.
  ``AsyncSession.__aexit__`` runs ``close()`` to completion in a task of its own
  (``_run_to_completion``).
- FastAPI 0.165: an ``async`` ``yield`` dependency's exit runs in a shielded AnyIO scope
  (``_asynccontextmanager_with_shielded_exit``), so its ``await``\\ s are not cancelled again.
  A ``def`` route runs in a worker thread, which nothing can cancel: FastAPI's wait for it is
  shielded against AnyIO's cancellation, but not against a plain ``asyncio`` one
  (``task.cancel()``, ``asyncio.timeout``, ``asyncio.wait_for``). Cancelled that way, the request
  stops waiting and runs the dependency's exit, which closes the session while the thread is
  still using it.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

import asyncio
import gc
import itertools
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
from sqlalchemy.engine import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.infra.uvicorn import uvicorn_in_process
from labkit.instruments.events import listening
from labkit.instruments.finishing import RequestGroup
from labkit.instruments.watch import queue_pool, until
from labkit.lessons.lifecycle.client_gone_app import (
    Notes,
    client_gone_app,
)
from labkit.lessons.lifecycle.left_behind import (
    PoolFates,
    server_log,
    settled_backends,
    watching_pool,
)

GivesUp = Literal["client", "route", "middleware, asyncio", "middleware, anyio"]
"""Who ends each request early: the client leaves; the route's ``asyncio.timeout`` around its
statements (``async def`` only); or `CancelAfter`, cancelling the asyncio or the AnyIO way."""


@dataclass(frozen=True)
class Abandonment:
    """One way a request is abandoned: the route, its database, and who gives up."""

    route: Literal["def", "async def"]
    url: URL
    """The database; the route's session decides the driver: sqlite3 or psycopg for a ``def``
    route's `Session`, aiosqlite or asyncpg for an ``async def`` route's `AsyncSession`."""
    gives_up: GivesUp = "client"

    def __post_init__(self) -> None:
        if self.gives_up == "route" and self.route != "async def":
            raise ValueError("only the async def route has a time limit of its own")
        if (
            self.route == "def"
            and self.gives_up == "middleware, asyncio"
            and self.url.get_backend_name() == "sqlite"
        ):
            raise ValueError(
                "not on SQLite: this case closes the session from a second thread while the"
                " route's thread still uses its sqlite3 connection, which sqlite3 leaves to the"
                " app to prevent (check_same_thread=False) and which can crash the process"
            )

    @property
    def is_async(self) -> bool:
        return self.route == "async def"

    @property
    def path(self) -> str:
        if self.gives_up == "route":
            return "/async/time-limited/users/{}/posts"
        return "/async/users/{}/posts" if self.is_async else "/def/users/{}/posts"

    @property
    def cancel_by(self) -> Literal["asyncio", "anyio"] | None:
        if self.gives_up == "middleware, asyncio":
            return "asyncio"
        return "anyio" if self.gives_up == "middleware, anyio" else None

    def who_gives_up(self, time_limit_s: float) -> str:
        if self.gives_up == "client":
            return "the client leaves"
        if self.gives_up == "route":
            return f"the route: asyncio.timeout({time_limit_s:g})"
        way = "asyncio.timeout" if self.cancel_by == "asyncio" else "anyio.fail_after"
        return f"a middleware: {way}({time_limit_s:g})"


@dataclass
class Abandoned:
    """What one setup's abandoned requests left behind (see the module's docstring)."""

    setup: Abandonment
    driver: str
    requests: int
    answers: Counter[str]
    """What each client got: a status code, or "left" where it closed its connection first."""
    notes: Notes
    fates: PoolFates
    client_left_in_time: bool
    """Where the client left: every route was still waiting on the database when it did."""
    checked_out: int
    """Connections still checked out once the app had finished every request."""
    checked_out_after_gc: int
    sessions_open: int
    backends: int | None
    """On PostgreSQL: backends of the engine, once the app had finished (idle in the pool,
    or leaked); None on SQLite."""
    pooled: int
    """Connections the pool kept open, idle, at that moment (``pool.checkedin()``)."""
    backends_after_dispose: int | None
    log: Counter[str]
    time_limit_s: float
    seconds: float

    @property
    def never_ran(self) -> Counter[str]:
        """Requests whose route never began (cancelled before it), as a count to add to the
        route's notes."""
        return Counter({"never ran": self.requests - len(self.notes.began)})

    @property
    def answered_while_route_ran(self) -> int:
        """Requests whose answer the server began to send before their route had ended (of
        those whose route ran, and whose client waited for an answer)."""
        notes = self.notes
        return sum(
            notes.answered[key] < notes.ended[key] for key in notes.answered if key in notes.ended
        )

    def row(self) -> dict[str, object]:
        """The table's row: who gave up, and what each part saw and left behind."""
        return {
            "route": self.setup.route,
            "driver": self.driver,
            "who gives up": self.setup.who_gives_up(self.time_limit_s),
            "answers": in_words(self.answers),
            "route saw": in_words(self.notes.route + self.never_ran),
            "exit saw": in_words(self.notes.exit),
            "returned": self.fates.returned,
            "invalidated": sum(self.fates.invalidated.values()),
            "checked out": self.checked_out,
            "after gc": self.checked_out_after_gc,
            "sessions open": self.sessions_open,
            "backends": "-" if self.backends is None else self.backends,
            "after dispose": "-"
            if self.backends_after_dispose is None
            else self.backends_after_dispose,
            "server log": in_words(self.log) or "nothing",
        }


def in_words(counter: Counter[str]) -> str:
    """A count per name, most first: "25 returned, 25 TimeoutError"."""
    return ", ".join(f"{count} {name}" for name, count in counter.most_common())


async def _one_batch(
    client: httpx.AsyncClient, setup: Abandonment, notes: Notes, keys: range, answers: Counter[str]
) -> bool:
    """Send one request per key at once; return whether every client that left did so while
    its route was still waiting on the database."""
    path = setup.path

    async def ask(key: int) -> None:
        response = await client.get(path.format(key))
        answers[str(response.status_code)] += 1

    tasks = [asyncio.create_task(ask(key)) for key in keys]
    if setup.gives_up != "client":
        await asyncio.gather(*tasks)
        return True
    # Every route has begun, and waits on the database: now every client leaves. A cancelled
    # httpx request closes its connection, as a closed browser tab or an httpx timeout does.
    await until(lambda: all(key in notes.began for key in keys))
    left = time.perf_counter()
    for task in tasks:
        task.cancel()
    for done in await asyncio.gather(*tasks, return_exceptions=True):
        answers["left" if isinstance(done, asyncio.CancelledError) else "answered"] += 1
    await until(lambda: all(key in notes.ended for key in keys))
    return all(notes.ended[key] > left for key in keys)


async def warm(database: SyncDatabase | AsyncDatabase, connections: int) -> None:
    """Have `connections` connections open in the pool: check that many out at once, then give
    them back. A request then finds its connection ready, as in an app that has served a while,
    and a time limit strikes inside a statement, not while a connection is being opened."""
    if isinstance(database, AsyncDatabase):
        held = [database.engine.connect() for _ in range(connections)]
        await asyncio.gather(*(connection.start() for connection in held))
        await asyncio.gather(*(connection.close() for connection in held))
        return
    engine = database.engine

    def connect_all() -> None:
        with ThreadPoolExecutor(max_workers=connections) as threads:  # in parallel
            held = list(threads.map(lambda _: engine.connect(), range(connections)))
        for connection in held:
            connection.close()

    await asyncio.to_thread(connect_all)


async def _until_done(stage: "Stage", notes: Notes, keys: range) -> None:
    """Return once the app is done with the batch `keys`: every request's ASGI call has
    returned (its dependencies' exit included), and every route has ended, in whatever thread.

    A request cancelled before its route began may still have a ``def`` route queued for a
    worker thread, which starts it later; so the wait goes on until no route has begun for a
    moment (0.1 s), or all have.
    """
    await until(lambda: stage.in_flight == 0)
    while True:
        await until(lambda: len(notes.began) == len(notes.ended))
        if all(key in notes.began for key in keys):
            return
        begun = len(notes.began)
        await asyncio.sleep(0.1)
        if len(notes.began) == begun and len(notes.began) == len(notes.ended):
            return


class Stage:
    """An ASGI app that hands every request to the app on stage now: one uvicorn server serves
    several apps in turn, without a start and a stop for each (a stop alone waits up to 0.1 s
    for uvicorn's main loop to notice). The apps on stage have no lifespan of their own.

    It counts the requests in flight, and notes in the stage's `notes` when the server began
    sending each answer (by the user id in its path), on the clock the routes note on.

    Each request runs in `requests`, an AnyIO task group kept open while the stage serves. A
    uvicorn process runs its server in AnyIO's root task, and AnyIO keeps its worker threads
    for reuse while that task lives; under a Jupyter kernel, a request in a bare task would be
    its own root and start a worker thread of its own, slower than a server would be
    (labkit.instruments.finishing tells the whole story).
    """

    def __init__(self, requests: RequestGroup) -> None:
        self.app: ASGIApp | None = None
        self.notes: Notes | None = None
        self.requests = requests
        self.in_flight = 0
        """Requests whose ASGI call has not returned: once it has, FastAPI has run the
        dependencies' exit code too."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if self.app is None or self.notes is None:
            raise RuntimeError("no app on stage")
        notes = self.notes
        key = int(scope["path"].split("/")[-2])  # /.../users/{user_id}/posts

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                notes.answered[key] = time.perf_counter()
            await send(message)

        self.in_flight += 1
        try:
            await self.requests.start(scope, receive, noting_send, self.app)
        finally:
            self.in_flight -= 1


_setup_numbers = itertools.count(1)
"""Numbers the setups this process has served, so that no two share an ``application_name``."""


async def abandon_each(
    setups: list[Abandonment],
    *,
    requests: int,
    at_once: int,
    latency_ms: float,
    time_limit_s: float,
    application_name: str = "lab client gone",
) -> list[Abandoned]:
    """`abandon` each setup in turn, served by one uvicorn server (`Stage`). On PostgreSQL the
    connections of each setup carry `application_name` and a number of their own.

    The route runs two statements, each waiting `latency_ms`: a time limit must fall after the
    first has begun and before the second has ended, or it would strike nothing (or strike
    while a connection is still being opened), so `time_limit_s` must lie between the two.
    """
    if not latency_ms / 1000 < time_limit_s < 2 * latency_ms / 1000:
        raise ValueError(
            f"time_limit_s={time_limit_s:g} must lie between one statement's wait and two"
            f" ({latency_ms / 1000:g} s and {2 * latency_ms / 1000:g} s), so that it strikes"
            " while the route waits on its second statement"
        )
    if requests < 1 or at_once < 1:
        raise ValueError(f"requests={requests} and at_once={at_once} must be at least 1")
    group = RequestGroup()
    stage = Stage(group)
    results = []
    limits = httpx.Limits(max_keepalive_connections=0)  # a connection per request
    async with (
        group.open(),
        uvicorn_in_process(stage) as base,
        httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client,
    ):
        # A server that has served a while has its worker threads: start them now, for the
        # routes and the sync dependencies' setup, so no request waits for one to start.
        threads = anyio.to_thread.current_default_thread_limiter().total_tokens  # may be inf
        await asyncio.gather(
            *(
                anyio.to_thread.run_sync(time.sleep, 0.01)
                for _ in range(int(min(2 * at_once, threads)))
            )
        )
        for setup in setups:
            results.append(
                await abandon(
                    setup,
                    stage,
                    client,
                    requests=requests,
                    at_once=at_once,
                    latency_ms=latency_ms,
                    time_limit_s=time_limit_s,
                    application_name=f"{application_name} {next(_setup_numbers)}",
                )
            )
    return results


async def abandon(
    setup: Abandonment,
    stage: Stage,
    client: httpx.AsyncClient,
    *,
    requests: int,
    at_once: int,
    latency_ms: float,
    time_limit_s: float,
    application_name: str,
) -> Abandoned:
    """Put `setup`'s app on `stage`, on a fresh engine, and end `requests` requests early, sent
    by `client` (one connection each), `at_once` at a time, each batch once the app has
    finished the last.

    Every statement waits `latency_ms`; `time_limit_s` is the route's or the middleware's
    limit, where one of them gives up. The pool holds `at_once` connections (no overflow), so
    each request of a batch gets one, and before each batch the lab opens any that are
    missing (`warm`). A ``pool_timeout`` of 0.1 s keeps a pool run dry from stalling the run.
    Python's cycle collector is paused meanwhile, so a connection left checked out stays out
    until it is counted (`checked_out`), then collected (`checked_out_after_gc`). On
    PostgreSQL the engine's connections carry `application_name`, so that only its backends
    are counted. The engine is disposed at the end.
    """
    options = EngineOptions(
        latency_ms=latency_ms,
        pool_size=at_once,
        max_overflow=0,
        pool_timeout=0.1,
        application_name=application_name,
    )
    database: SyncDatabase | AsyncDatabase
    if setup.is_async:
        database = AsyncDatabase.create(setup.url, options)
        engine = database.engine.sync_engine
    else:
        database = SyncDatabase.create(setup.url, options)
        engine = database.engine
    pool = queue_pool(engine.pool)  # until `dispose` below replaces it
    on_postgres = engine.url.get_backend_name() == "postgresql"
    notes = Notes()
    answers: Counter[str] = Counter()
    in_time = True
    started = time.perf_counter()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        session_events = (
            [(database.SessionLocal, "after_begin", notes.session_began)]
            if isinstance(database, SyncDatabase)
            else []
        )
        with watching_pool(engine) as fates, server_log() as log, listening(session_events):
            stage.app = client_gone_app(database, notes, time_limit_s, setup.cancel_by)
            stage.notes = notes
            with log.uvicorn():
                for first in range(1, requests + 1, at_once):
                    keys = range(first, min(first + at_once, requests + 1))
                    if pool.checkedout() == 0:
                        fates.counting = False
                        await warm(database, len(keys))
                        fates.counting = True
                    in_time &= await _one_batch(client, setup, notes, keys, answers)
                    await _until_done(stage, notes, keys)
            stage.app = None
            checked_out = pool.checkedout()
            pooled = pool.checkedin()
            backends = (
                await settled_backends(engine.url, application_name, fates.open)
                if on_postgres
                else None
            )
            sessions_open = database.ledger.open
    finally:
        stage.app = None
        if was_enabled:
            gc.enable()
    checked_out_after_gc = pool.checkedout()
    if isinstance(database, AsyncDatabase):
        await database.dispose()
    else:
        database.dispose()
    after_dispose = (  # disposing closes what is in the pool, not what is still checked out
        await settled_backends(engine.url, application_name, checked_out_after_gc)
        if on_postgres
        else None
    )
    return Abandoned(
        setup=setup,
        driver=engine.url.get_driver_name() or engine.url.get_backend_name(),
        requests=requests,
        answers=answers,
        notes=notes,
        fates=fates,
        client_left_in_time=in_time,
        checked_out=checked_out,
        checked_out_after_gc=checked_out_after_gc,
        sessions_open=sessions_open,
        backends=backends,
        pooled=pooled,
        backends_after_dispose=after_dispose,
        log=log.said,
        time_limit_s=time_limit_s,
        seconds=time.perf_counter() - started,
    )
