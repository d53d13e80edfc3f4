"""Small apps for lessons the learner's main app does not serve, written as a learner would.

Each lesson's routes and dependencies are module-level functions (a notebook prints them with
`inspect.getsource`), using the learner's `SessionDep`; each app factory swaps in a database of
the lab's with ``app.dependency_overrides``, as `create_app` does.

- `commit_after_yield_app`: the session dependency commits after its ``yield`` instead of the
  route committing. FastAPI (0.165, the pinned version) runs a ``yield`` dependency's exit code
  after the response has been sent (scope ``"request"``, the default) or before it
  (``Depends(..., scope="function")``). What the route, the dependency and the server did is
  logged (logger ``labkit.lessons``), and a `Timeline` keeps it in order, so a notebook can show
  what the client had already received when the commit failed.
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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..shop import threadpool
from ..shop.database import SessionDep, get_db
from ..shop.errors import add_error_handlers
from ..shop.models import User, UserCreate, UserId, UserOut
from .app import thread_limit
from .databases import SyncDatabase

log = logging.getLogger("labkit.lessons")


class Timeline(logging.Handler):
    """What the lesson apps logged while serving requests, one line per step, in order."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(record.getMessage())  # atomic: threadpool threads log too

    def clear(self) -> None:
        self.events.clear()

    def show(self) -> None:
        for number, event in enumerate(self.events, 1):
            print(f"{number}. {event}")


class _LogResponse:
    """ASGI middleware: logs when the response has gone out, and any error the app raised.

    A real server (uvicorn) logs an error raised after the response was sent; the client never
    hears of it. Logging both here lets a notebook show which came first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_sent: list[int] = []

        async def send_and_log(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                status_sent.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log.info("server: response sent to the client, status %d", status_sent[0])

        try:
            await self.app(scope, receive, send_and_log)
        except Exception as exc:
            log.info("server: the app raised %s: %s", type(exc).__name__, exc)
            raise


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


def _lifespan(
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
    """
    app = FastAPI(title="Commit after yield", lifespan=_lifespan(timeline))
    app.add_middleware(_LogResponse)
    app.include_router(commit_router)
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
        title="When a connection goes back to the pool", lifespan=_lifespan(None, threads)
    )
    add_error_handlers(app)
    app.include_router(threadpool.router)
    app.include_router(released_router)
    app.dependency_overrides[get_db] = database.get_db
    return app
