"""When each step of a request happens: a lesson app that notes the time of every step.

The app reads one user through the shop app's session dependency in four ways: a ``def`` route
with ``SessionDep`` and an ``async def`` route with ``AsyncSessionDep``, each with the default
dependency scope (``"request"``) and with ``Depends(..., scope="function")``. Each step of a
request is noted on one clock (``time.perf_counter()``, the same in every thread) in a
`Timeline`:

- the lab's ``get_db`` (or ``get_async_db``), swapped in with ``app.dependency_overrides``,
  notes when FastAPI enters it and when its code after ``yield`` begins;
- the route notes when it starts and when it returns;
- the answer's model, `NotedUserOut`, notes when FastAPI validates the route's answer;
- pool events note when a pooled connection is checked out and checked in;
- ASGI middleware notes when the request reaches the app, when the response starts, when the
  last of its body has been handed to the server, and when the app is done with the request;
- the caller notes when the client has the answer (`Timeline.note`).

Served in process (``lab_client``) a request returns only once the app is done with it; served
by uvicorn (``uvicorn_in_process(app)``: in this process, over a real socket) the client can
have its answer while the app still runs the dependency's exit code. `measure_steps` runs one `Case`
several times, either way, and keeps each run's steps in a `RequestSteps`.

The app also serves the ``scope="function"`` trap's routes (labkit.lessons.commit, shown
in full in notebook 03) and the lab's own ``POST /threadpool/users``, which commits in the
route, so their steps are noted too.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

import statistics
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Self

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.instruments.events import Listener, listening
from labkit.instruments.latency import transaction_end_waits
from labkit.instruments.response_watch import ResponseWatch
from labkit.instruments.watch import until
from labkit.lessons import commit
from labkit.lessons.timeline import Timeline, lesson_lifespan, log
from labkit.shop import threadpool
from labkit.shop.database import AsyncSessionDep, SessionDep, get_async_db, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import User, UserId, UserOut

REQUEST_STARTS = "request starts"
DEPENDENCY_ENTERS = "session dependency enters"
CHECKED_OUT = "connection checked out"
ROUTE_STARTS = "route starts"
ROUTE_RETURNS = "route returns"
VALIDATED = "answer validated"
RESPONSE_STARTS = "response starts"
BODY_SENT = "body sent"
DEPENDENCY_EXITS = "session dependency exits"
CHECKED_IN = "connection checked in"
REQUEST_ENDS = "request ends"
CLIENT_HAS_IT = "client has the answer"

STEPS = (
    REQUEST_STARTS,
    DEPENDENCY_ENTERS,
    ROUTE_STARTS,
    CHECKED_OUT,
    ROUTE_RETURNS,
    VALIDATED,
    RESPONSE_STARTS,
    BODY_SENT,
    DEPENDENCY_EXITS,
    CHECKED_IN,
    REQUEST_ENDS,
    CLIENT_HAS_IT,
)
"""Every step of a read, in the order the default scope takes them in process."""


class NotedUserOut(UserOut):
    """`UserOut`, noting the moment FastAPI validates a route's answer against it."""

    @model_validator(mode="after")
    def noted(self) -> Self:
        log.info(VALIDATED)
        return self


FunctionScopedSessionDep = Annotated[Session, Depends(get_db, scope="function")]
FunctionScopedAsyncSessionDep = Annotated[AsyncSession, Depends(get_async_db, scope="function")]

router = APIRouter()


def read_user(db: Session, user_id: int) -> User:
    log.info(ROUTE_STARTS)
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    log.info(ROUTE_RETURNS)
    return user  # FastAPI turns it into a NotedUserOut after the route has returned


async def read_user_async(db: AsyncSession, user_id: int) -> User:
    log.info(ROUTE_STARTS)
    user = await db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    log.info(ROUTE_RETURNS)
    return user


@router.get("/def/request-scope/users/{user_id}")
def read_user_def(user_id: UserId, db: SessionDep) -> NotedUserOut:
    return read_user(db, user_id)


@router.get("/def/function-scope/users/{user_id}")
def read_user_def_function_scope(user_id: UserId, db: FunctionScopedSessionDep) -> NotedUserOut:
    return read_user(db, user_id)


@router.get("/async/request-scope/users/{user_id}")
async def read_user_async_def(user_id: UserId, db: AsyncSessionDep) -> NotedUserOut:
    return await read_user_async(db, user_id)


@router.get("/async/function-scope/users/{user_id}")
async def read_user_async_def_function_scope(
    user_id: UserId, db: FunctionScopedAsyncSessionDep
) -> NotedUserOut:
    return await read_user_async(db, user_id)


@dataclass
class _NotedSessions:
    """The lab's session dependencies, noting when FastAPI enters them and when the code after
    their ``yield`` begins (for ``get_db``, on a worker thread; for ``get_async_db``, on the
    event loop)."""

    sync: SyncDatabase
    async_: AsyncDatabase

    def get_db(self) -> Iterator[Session]:
        log.info(DEPENDENCY_ENTERS)
        with contextmanager(self.sync.get_db)() as session:
            try:
                yield session
            finally:
                log.info(DEPENDENCY_EXITS)

    async def get_async_db(self) -> AsyncIterator[AsyncSession]:
        log.info(DEPENDENCY_ENTERS)
        async with asynccontextmanager(self.async_.get_async_db)() as session:
            try:
                yield session
            finally:
                log.info(DEPENDENCY_EXITS)


class _NoteResponse(ResponseWatch):
    """ASGI middleware: notes when a request reaches the app, when its response starts, when
    the last of the body has been handed to the server, when the app is done, and any error.

    An error is noted by its type: FastAPI's own 500 is sent by the server-error middleware,
    outside this one, so it has no "response starts" here.
    """

    def request_starts(self) -> None:
        log.info(REQUEST_STARTS)

    def response_starts(self, status: int) -> None:
        log.info(RESPONSE_STARTS)

    def body_sent(self, status: int) -> None:
        log.info(BODY_SENT)

    def raised(self, exc: Exception) -> None:
        log.info("the app raised %s", type(exc).__name__)

    def request_ends(self) -> None:
        log.info(REQUEST_ENDS)


def request_steps_app(sync: SyncDatabase, async_: AsyncDatabase, clock: Timeline) -> FastAPI:
    """The four reads, ``GET /{def,async}/{request,function}-scope/users/{id}``, the trap's
    routes (``POST /function-scope/{unflushed,flushed}/users``) and the lab's own
    ``POST /threadpool/users``, with every step noted in `clock` while the app runs.

    Each database's simulated latency applies to its COMMITs and ROLLBACKs as well
    (`transaction_end_waits`). The caller creates the tables and disposes both databases.
    """

    def noting(step: str) -> Callable[..., None]:
        return lambda *_args: log.info(step)

    listeners: list[Listener] = []
    for engine, latency_ms in (
        (sync.engine, sync.options.latency_ms),
        (async_.engine.sync_engine, async_.options.latency_ms),
    ):
        listeners += [(engine, "checkout", noting(CHECKED_OUT))]
        listeners += [(engine, "checkin", noting(CHECKED_IN))]
        listeners += transaction_end_waits(engine, latency_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with listening(listeners):
            async with lesson_lifespan(clock)(app):
                yield

    app = FastAPI(title="When each step of a request happens", lifespan=lifespan)
    app.add_middleware(_NoteResponse)
    add_error_handlers(app)
    app.include_router(router)
    app.include_router(commit.commit_router)
    app.include_router(threadpool.router)
    sessions = _NotedSessions(sync, async_)
    app.dependency_overrides[get_db] = sessions.get_db
    app.dependency_overrides[get_async_db] = sessions.get_async_db
    return app


@dataclass(frozen=True)
class Case:
    """One way to serve the read: the route's kind and the session dependency's scope."""

    route: str
    """``"def"`` (sync `Session`) or ``"async def"`` (`AsyncSession`)."""
    scope: str
    """``"request"`` (the default) or ``"function"``."""

    @property
    def path(self) -> str:
        """The route's path, without the user id."""
        return f"/{self.route.split()[0]}/{self.scope}-scope/users"

    def __str__(self) -> str:
        return f"{self.route}, scope={self.scope!r}"


CASES = tuple(
    Case(route, scope) for route in ("def", "async def") for scope in ("request", "function")
)


@dataclass(frozen=True)
class RequestSteps:
    """One case's runs, served one way: each run's steps, in ms since the request reached the
    app."""

    case: Case
    served: str
    """``"in process"`` or ``"over a socket"``."""
    runs: tuple[dict[str, float], ...]

    def median(self) -> dict[str, float]:
        """Each step's median time over the runs, earliest first: one typical request."""
        medians = {step: statistics.median(run[step] for run in self.runs) for step in self.runs[0]}
        return dict(sorted(medians.items(), key=lambda item: item[1]))

    def always_before(self, first: str, then: str) -> bool:
        """Whether `first` came before `then` in every run."""
        return all(run[first] < run[then] for run in self.runs)

    def held_after_body_ms(self) -> float:
        """Median time the connection stayed checked out after the body was sent (negative: it
        was back before)."""
        return statistics.median(run[CHECKED_IN] - run[BODY_SENT] for run in self.runs)

    def row(self) -> dict[str, Any]:
        """The median times a table shows, in ms since the request reached the app."""
        median = self.median()
        return {
            "served": self.served,
            "route": self.case.route,
            "scope": self.case.scope,
            "answer validated": median[VALIDATED],
            "body sent": median[BODY_SENT],
            "connection back": median[CHECKED_IN],
            "client has it": median[CLIENT_HAS_IT],
            "held after body sent": self.held_after_body_ms(),
        }


async def _until_noted(clock: Timeline, step: str) -> None:
    """Wait until `step` has been noted: over a socket the app may still be busy with a request
    the client already has its answer to. A step that never comes fails after 5 s."""
    await until(lambda: step in clock.events, timeout_s=5, every_s=0.001)


async def measure_steps(
    client: httpx.AsyncClient, clock: Timeline, case: Case, *, served: str, runs: int
) -> RequestSteps:
    """Read users 1 to `runs` through `case`'s route, one request at a time, after one request
    that is not kept (it may open the pool's first connection); keep each run's steps.

    `client` talks to a `request_steps_app` using `clock`: in process (``lab_client``) or over a
    socket (an ``httpx.AsyncClient`` on ``uvicorn_in_process(app)``'s URL), as `served` says.
    """
    kept: list[dict[str, float]] = []
    for run in range(runs + 1):  # run 0 is the one not kept; it reads user 1 too
        clock.clear()
        response = await client.get(f"{case.path}/{run or 1}")
        clock.note(CLIENT_HAS_IT)
        response.raise_for_status()
        await _until_noted(clock, REQUEST_ENDS)
        if run:
            kept.append(clock.since_start(REQUEST_STARTS))
    return RequestSteps(case, served, tuple(kept))
