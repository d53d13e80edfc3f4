"""The client goes away mid-request: what the route, the session dependency and the pool see.

A request can end early in two ways. The **client** can leave: a closed browser tab, an
``httpx`` timeout, a load balancer giving up. Or the **app** can give up on its own work: a
time limit around a statement (``asyncio.timeout``), or a timeout middleware that cancels the
whole request. `abandon_each` serves a small app for each `Setup` under uvicorn, over a real
socket, sends requests that wait on the database (each statement waits the simulated latency,
labkit.instruments.latency), and ends each one early in one of those ways, a batch of requests
at a time. Then it reports, in an `Abandoned`, what was left behind:

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
import builtins
import gc
import itertools
import logging
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.infra.postgres import libpq_url
from labkit.infra.uvicorn import uvicorn_in_process
from labkit.instruments.events import listening
from labkit.instruments.finishing import RequestGroup
from labkit.instruments.watch import collect_log, until
from labkit.shop.database import AsyncSessionDep, SessionDep, get_async_db, get_db
from labkit.shop.models import Post, User, UserId

RETURNED = "returned"
"""What `Notes` records when nothing reached the code it watches: it ran to its end."""


def exception_name(exc: BaseException) -> str:
    """The exception's class name, with its module where the name alone would be a built-in's
    (SQLAlchemy's pool ``TimeoutError`` is not the built-in one)."""
    name = type(exc).__name__
    if getattr(builtins, name, type(exc)) is type(exc):
        return name
    return f"{type(exc).__module__}.{name}"


class Notes:
    """What each request's route and session dependency saw, noted from any thread.

    `route` and `exit` count outcomes by name: `RETURNED`, or the exception's class name. In
    ``async def`` code the notes also try one ``await`` right after an exception
    (`awaited_after`): ``"ran"``, or ``"cancelled again"`` where a cancelled AnyIO scope
    cancels every ``await`` until it is left. Each route notes when it began and ended, by user
    id, so the lab can tell that the client left while the route was still waiting.
    """

    def __init__(self) -> None:
        self.route: Counter[str] = Counter()
        self.exit: Counter[str] = Counter()
        self.awaited_after: dict[str, Counter[str]] = {"route": Counter(), "exit": Counter()}
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.answered: dict[int, float] = {}
        """When the server began sending each answer, by user id."""
        self.began_again = 0
        """Sessions that began a second transaction: a request's session begins one, unless
        something closed it and the route used it again (a new checkout nobody gives back)."""
        self._lock = threading.Lock()

    def session_began(self, session: Session, *_args: Any) -> None:
        """SQLAlchemy's ``after_begin`` event: count a session's transactions."""
        with self._lock:
            session.info["transactions"] = session.info.get("transactions", 0) + 1
            if session.info["transactions"] == 2:
                self.began_again += 1

    def _note(self, where: Counter[str], outcome: str) -> None:
        with self._lock:
            where[outcome] += 1

    @contextmanager
    def route_sync(self, key: int) -> Iterator[None]:
        """Around a ``def`` route's work: when it began and ended, and what reached it."""
        self.began[key] = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._note(self.route, exception_name(exc))
            raise
        else:
            self._note(self.route, RETURNED)
        finally:
            self.ended[key] = time.perf_counter()

    @asynccontextmanager
    async def route_async(self, key: int) -> AsyncIterator[None]:
        """The same around an ``async def`` route's work, with one ``await`` after an exception."""
        self.began[key] = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._note(self.route, exception_name(exc))
            await self._try_await("route")
            raise
        else:
            self._note(self.route, RETURNED)
        finally:
            self.ended[key] = time.perf_counter()

    @contextmanager
    def exit_sync(self) -> Iterator[None]:
        """Around a sync dependency's ``yield``: what reached it (FastAPI throws it in there)."""
        try:
            yield
        except BaseException as exc:
            self._note(self.exit, exception_name(exc))
            raise
        else:
            self._note(self.exit, RETURNED)

    @asynccontextmanager
    async def exit_async(self) -> AsyncIterator[None]:
        """Around an async dependency's ``yield``, with one ``await`` after an exception."""
        try:
            yield
        except BaseException as exc:
            self._note(self.exit, exception_name(exc))
            await self._try_await("exit")
            raise
        else:
            self._note(self.exit, RETURNED)

    async def _try_await(self, where: str) -> None:
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:  # a cancellation is what this looks for
            self._note(self.awaited_after[where], "cancelled again")
        else:
            self._note(self.awaited_after[where], "ran")


def get_notes() -> Notes:
    """Each lab app overrides this with its own `Notes` (``app.dependency_overrides``)."""
    raise RuntimeError("serve the routes with client_gone_app(), which gives them their notes")


NotesDep = Annotated[Notes, Depends(get_notes)]


def get_time_limit() -> float:
    """Seconds a time-limited route gives its statements (the lab app sets it)."""
    return 1.0


TimeLimitDep = Annotated[float, Depends(get_time_limit)]


class PostCount(BaseModel):
    user_id: int
    posts: int


router = APIRouter()


def count_posts(db: Session, user_id: int) -> PostCount:
    user = db.get(User, user_id)  # statement 1: waits on the database
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user with id {user_id}")
    posts = db.scalar(select(func.count()).where(Post.author_id == user_id))  # statement 2
    return PostCount(user_id=user_id, posts=posts or 0)


async def count_posts_async(db: AsyncSession, user_id: int) -> PostCount:
    user = await db.get(User, user_id)  # statement 1: the loop serves others meanwhile
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user with id {user_id}")
    posts = await db.scalar(select(func.count()).where(Post.author_id == user_id))
    return PostCount(user_id=user_id, posts=posts or 0)


@router.get("/def/users/{user_id}/posts")
def count_posts_def(user_id: UserId, db: SessionDep, notes: NotesDep) -> PostCount:
    with notes.route_sync(user_id):
        return count_posts(db, user_id)


@router.get("/async/users/{user_id}/posts")
async def count_posts_async_def(user_id: UserId, db: AsyncSessionDep, notes: NotesDep) -> PostCount:
    async with notes.route_async(user_id):
        return await count_posts_async(db, user_id)


@router.get("/async/time-limited/users/{user_id}/posts")
async def count_posts_time_limited(
    user_id: UserId, db: AsyncSessionDep, notes: NotesDep, time_limit_s: TimeLimitDep
) -> PostCount:
    try:
        async with asyncio.timeout(time_limit_s), notes.route_async(user_id):
            return await count_posts_async(db, user_id)
    except TimeoutError:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT, detail="the database took too long"
        ) from None


class CancelAfter:
    """A timeout middleware, as often written: it cancels the request after `seconds` and
    answers ``504``.

    `by` is how it cancels: ``"asyncio"`` (``asyncio.timeout``: one ``task.cancel()``, as
    ``asyncio.wait_for`` does) or ``"anyio"`` (``anyio.fail_after``: a cancel scope, which
    cancels every ``await`` inside it until it is left, unless shielded). Pure ASGI, so the
    cancellation reaches the route (Starlette's ``BaseHTTPMiddleware`` runs the app in a task
    of its own, where a ``wait_for`` around ``call_next`` does not reach it).
    """

    def __init__(self, app: ASGIApp, seconds: float, by: Literal["asyncio", "anyio"]) -> None:
        self.app, self.seconds, self.by = app, seconds, by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if self.by == "asyncio":
                async with asyncio.timeout(self.seconds):
                    await self.app(scope, receive, noting_send)
            else:
                with anyio.fail_after(self.seconds):
                    await self.app(scope, receive, noting_send)
        except TimeoutError:
            if not started:
                answer = JSONResponse({"detail": "the request took too long"}, status_code=504)
                await answer(scope, receive, send)


def client_gone_app(
    database: SyncDatabase | AsyncDatabase,
    notes: Notes,
    time_limit_s: float,
    cancel_by: Literal["asyncio", "anyio"] | None = None,
) -> FastAPI:
    """The routes above on `database`, with a session dependency that notes what reaches its
    ``yield`` (`noted_session_dependency`). `time_limit_s` is the time-limited route's limit,
    and `CancelAfter`'s, around it all, if `cancel_by` names a way to cancel."""
    app = FastAPI(title="The client goes away")
    app.include_router(router)
    app.dependency_overrides[get_notes] = lambda: notes
    app.dependency_overrides[get_time_limit] = lambda: time_limit_s
    dependency = noted_session_dependency(database, notes)
    app.dependency_overrides[get_async_db if isinstance(database, AsyncDatabase) else get_db] = (
        dependency
    )
    if cancel_by is not None:
        app.add_middleware(CancelAfter, seconds=time_limit_s, by=cancel_by)
    return app


def noted_session_dependency(
    database: SyncDatabase | AsyncDatabase, notes: Notes
) -> Callable[[], Any]:
    """The learner's ``get_db`` (or ``get_async_db``), with `Notes` around its ``yield``."""
    if isinstance(database, AsyncDatabase):
        factory = database.AsyncSessionLocal

        async def get_async_db_noted() -> AsyncIterator[AsyncSession]:
            async with factory() as session, notes.exit_async():
                yield session

        return get_async_db_noted
    session_factory = database.SessionLocal

    def get_db_noted() -> Iterator[Session]:
        with session_factory() as session, notes.exit_sync():
            yield session

    return get_db_noted


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
    pool = engine.pool
    fates = PoolFates(open_before=pool.checkedin() + pool.checkedout())  # type: ignore[attr-defined]
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


GivesUp = Literal["client", "route", "middleware, asyncio", "middleware, anyio"]
"""Who ends each request early: the client leaves; the route's ``asyncio.timeout`` around its
statements (``async def`` only); or `CancelAfter`, cancelling the asyncio or the AnyIO way."""


@dataclass(frozen=True)
class Setup:
    """One way of serving and ending the requests: the route, its database, who gives up."""

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

    setup: Setup
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
    client: httpx.AsyncClient, setup: Setup, notes: Notes, keys: range, answers: Counter[str]
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
    setups: list[Setup],
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
        threads = anyio.to_thread.current_default_thread_limiter().total_tokens
        await asyncio.gather(
            *(anyio.to_thread.run_sync(time.sleep, 0.01) for _ in range(min(2 * at_once, threads)))
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
    setup: Setup,
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
                    if engine.pool.checkedout() == 0:  # type: ignore[attr-defined]
                        fates.counting = False
                        await warm(database, len(keys))
                        fates.counting = True
                    in_time &= await _one_batch(client, setup, notes, keys, answers)
                    await _until_done(stage, notes, keys)
            stage.app = None
            checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
            pooled = engine.pool.checkedin()  # type: ignore[attr-defined]
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
    checked_out_after_gc = engine.pool.checkedout()  # type: ignore[attr-defined]
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
