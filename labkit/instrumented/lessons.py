"""Small apps for lessons the learner's main app does not serve, written as a learner would.

Each lesson's routes and dependencies are module-level functions (a notebook prints them with
`inspect.getsource`), using the learner's `SessionDep`; each app factory swaps in a database of
the lab's with ``app.dependency_overrides``, as `create_app` does.

- `commit_after_yield_app`: the session dependency commits after its ``yield`` instead of the
  route committing. FastAPI (0.165, the pinned version) runs a ``yield`` dependency's exit code
  after the response has been sent (scope ``"request"``, the default) or before it
  (``Depends(..., scope="function")``). What the route, the dependency and the server did is
  logged (logger ``labkit.lessons``), and a `Timeline` keeps it in order, so a notebook can show
  what the client had already received when the commit failed. Two more routes return the new
  `User` itself, as a create route usually does: FastAPI validates that answer before a
  ``scope="function"`` dependency commits, so without a ``flush()`` in the route it has no id yet.
- `refresh_after_commit_app`: ``commit(); refresh(user); return user`` beside the threadpool
  setup's ``POST /users``, which reads its answer before committing. The timeline adds when a
  pooled connection is checked out and returned, and how many are checked out when the response
  goes out and when the request ends.
- `author_listing_app`: users with their posts' titles, loaded lazily (one more query per user:
  the N+1 problem) or with ``selectinload`` (one more query in all).
- `connection_release_app`: the threadpool setup's routes (the session, and its pooled
  connection, closed by the dependency after the response), beside a read that closes the
  session before it returns. FastAPI validates a ``def`` route's answer in a worker thread, so
  the first can run out of threads while holding every connection.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import Engine, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from starlette.types import ASGIApp

from ..instruments.events import listening
from ..instruments.response_watch import ResponseWatch
from ..shop import threadpool
from ..shop.database import SessionDep, get_db
from ..shop.errors import add_error_handlers
from ..shop.models import User, UserCreate, UserId, UserOut
from .app import thread_limit
from .databases import SyncDatabase

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
        return f" (connections checked out: {self.engine.pool.checkedout()})"

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


def get_db_committing(db: SessionDep) -> Iterator[Session]:
    """The request's session; the commit happens here, after the route has returned."""
    yield db
    log.info("dependency: after yield, commit")
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        log.info("dependency: commit failed (IntegrityError), rolled back, raises 409")
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="not saved: a unique value is already taken"
        ) from None
    log.info("dependency: committed")


RequestScoped = Annotated[Session, Depends(get_db_committing)]
FunctionScoped = Annotated[Session, Depends(get_db_committing, scope="function")]

commit_router = APIRouter()


def add_user(payload: UserCreate, db: Session) -> UserCreate:
    db.add(User(**payload.model_dump()))
    log.info("route: user added to the session; route returns (its status: 201)")
    return payload


@commit_router.post("/request-scope/users", status_code=status.HTTP_201_CREATED)
def create_user_request_scope(payload: UserCreate, db: RequestScoped) -> UserCreate:
    return add_user(payload, db)


@commit_router.post("/function-scope/users", status_code=status.HTTP_201_CREATED)
def create_user_function_scope(payload: UserCreate, db: FunctionScoped) -> UserCreate:
    return add_user(payload, db)


@commit_router.post("/function-scope/unflushed/users", status_code=status.HTTP_201_CREATED)
def create_user_unflushed(payload: UserCreate, db: FunctionScoped) -> UserOut:
    user = User(**payload.model_dump())
    db.add(user)
    log.info("route: user added to the session (id %s); route returns it", user.id)
    return user  # FastAPI turns it into a UserOut now, before the dependency commits


@commit_router.post("/function-scope/flushed/users", status_code=status.HTTP_201_CREATED)
def create_user_flushed(payload: UserCreate, db: FunctionScoped) -> UserOut:
    user = User(**payload.model_dump())
    db.add(user)
    try:
        db.flush()  # the INSERT, still uncommitted: the id is known, a duplicate fails here
    except IntegrityError:
        log.info("route: flush failed (IntegrityError), raises 409")
        raise HTTPException(
            status_code=409, detail=f"a user with email {payload.email!r} exists"
        ) from None
    log.info("route: user added and flushed, so it has its id; route returns it")
    return user


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


def commit_after_yield_app(database: SyncDatabase, timeline: Timeline) -> FastAPI:
    """``POST /request-scope/users`` and ``POST /function-scope/users``: the route only adds the
    user; the dependency commits after ``yield``, with the default scope or ``"function"``.

    A commit that fails (a duplicate email) is turned into a 409 by the dependency. Whether the
    client ever sees that 409 depends on the scope. Serve it with
    ``lab_client(app, raise_app_exceptions=False)`` to get what a real client would.

    ``POST /function-scope/unflushed/users`` returns the new `User` unflushed: its id is still
    ``None`` when FastAPI validates it, so the answer is a 500 and the dependency never commits.
    ``POST /function-scope/flushed/users`` flushes first: the id exists, a duplicate email is a
    409 from the route, and the dependency commits after the answer is built.
    """
    app = FastAPI(title="Commit after yield", lifespan=lesson_lifespan(timeline))
    app.add_middleware(_LogResponse)
    app.include_router(commit_router)
    app.dependency_overrides[get_db] = database.get_db
    return app


refresh_router = APIRouter()


@refresh_router.post("/refreshed/users", status_code=status.HTTP_201_CREATED)
def create_user_refreshed(payload: UserCreate, db: SessionDep) -> UserOut:
    user = User(**payload.model_dump())
    db.add(user)
    db.commit()
    log.info("route: committed")
    db.refresh(user)  # reloads the expired `user`: a new transaction, on a pooled connection
    log.info("route: refreshed; returns the user")
    return user


def refresh_after_commit_app(database: SyncDatabase, timeline: Timeline) -> FastAPI:
    """``POST /refreshed/users`` (``commit(); refresh(user); return user``) beside the threadpool
    setup's routes, whose ``POST /threadpool/users`` reads its answer before it commits.

    Both take the session from ``get_db``, which closes it after the response has been sent. The
    timeline logs each checkout and return of a pooled connection, and how many are checked out
    as the response goes out and once the request has ended.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with _pool_logged(database.engine):
            async with lesson_lifespan(timeline)(app):
                yield

    app = FastAPI(title="A refresh after commit", lifespan=lifespan)
    app.add_middleware(_LogResponse, engine=database.engine)
    add_error_handlers(app)
    app.include_router(threadpool.router)
    app.include_router(refresh_router)
    app.dependency_overrides[get_db] = database.get_db
    return app


class AuthorOut(BaseModel):
    """A user and the titles of their posts, the shape a "list authors" page needs."""

    id: int
    name: str
    post_titles: list[str]


Limit = Annotated[int, Query(ge=1, le=1000, description="How many users, by id.")]
authors_router = APIRouter()


def first_users(limit: int) -> Select[tuple[User]]:
    return select(User).order_by(User.id).limit(limit)


def authors(db: Session, statement: Select[tuple[User]]) -> list[AuthorOut]:
    return [
        AuthorOut(id=user.id, name=user.name, post_titles=[post.title for post in user.posts])
        for user in db.scalars(statement)
    ]


@authors_router.get("/lazy/authors")
def lazy_authors(db: SessionDep, limit: Limit = 20) -> list[AuthorOut]:
    """Each ``user.posts`` read is a query of its own: the N+1 problem."""
    return authors(db, first_users(limit))


@authors_router.get("/selectin/authors")
def selectin_authors(db: SessionDep, limit: Limit = 20) -> list[AuthorOut]:
    """One query for the users, one ``... WHERE author_id IN (...)`` for all their posts."""
    return authors(db, first_users(limit).options(selectinload(User.posts)))


def author_listing_app(database: SyncDatabase) -> FastAPI:
    """``GET /lazy/authors?limit=N`` (1 + N queries) and ``GET /selectin/authors?limit=N`` (2).

    Both are ``def`` routes on the sync setup and return the same JSON; only the loading differs.
    """
    app = FastAPI(title="Authors and their posts")
    app.include_router(authors_router)
    app.dependency_overrides[get_db] = database.get_db
    return app


released_router = APIRouter()


@released_router.get("/released/users/{user_id}")
def read_user_released(user_id: UserId, db: SessionDep) -> UserOut:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    answer = UserOut.model_validate(user)
    db.close()  # the connection goes back now, not after the response
    return answer


def connection_release_app(database: SyncDatabase, *, threads: int | None = None) -> FastAPI:
    """The threadpool setup's routes (``/threadpool/...``) and ``GET /released/users/{id}``.

    Both reads go through the ``get_db`` dependency, on one pool. ``/threadpool/users/{id}``
    returns and leaves the closing to the dependency, which FastAPI runs after the response, so
    the connection stays checked out while FastAPI validates the answer in a worker thread.
    ``/released/users/{id}`` closes the session once the answer is built, so the connection is
    back in the pool before that second trip to the threadpool. `threads` sets AnyIO's thread
    limiter while the app runs; an exhausted pool answers 503, as in the main app. The caller
    creates the tables and disposes `database`.
    """
    app = FastAPI(
        title="When a connection goes back to the pool", lifespan=lesson_lifespan(None, threads)
    )
    add_error_handlers(app)
    app.include_router(threadpool.router)
    app.include_router(released_router)
    app.dependency_overrides[get_db] = database.get_db
    return app
