"""Small apps for lessons the lab's main app does not serve, built on the lab's sync setup.

- `commit_after_yield_app`: the session dependency commits after its ``yield`` instead of the
  route committing. FastAPI (0.165, the pinned version) runs a ``yield`` dependency's exit code
  after the response has been sent (scope ``"request"``, the default) or before it
  (``Depends(..., scope="function")``). The app serves both, and a `Timeline` records, in order,
  what the route, the dependency and the server did, so a notebook can show what the client had
  already received when the commit failed.
- `author_listing_app`: users with their posts' titles, loaded lazily (one more query per user:
  the N+1 problem) or with ``selectinload`` (one more query in all), to time the difference
  through an app rather than in a bare session.
- `connection_release_app`: the threadpool setup's read route as the main app has it (the
  session, and its pooled connection, closed by the dependency after the response), beside one
  that closes the session before it returns. FastAPI validates a ``def`` route's answer in a
  worker thread, so the first can run out of threads while holding every connection.

Route-building modules do not use ``from __future__ import annotations``: FastAPI must resolve
the closures' ``Annotated`` dependencies at runtime.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .app import thread_limit
from .database import SyncDatabase
from .errors import add_error_handlers
from .models import User, UserCreate, UserOut
from .routes import threadpool
from .routes.common import UserId, user_not_found


@dataclass
class Timeline:
    """What happened while serving requests, one line per step, in the order it happened."""

    events: list[str] = field(default_factory=list)

    def add(self, event: str) -> None:
        self.events.append(event)  # list.append is atomic: threadpool threads may add too

    def clear(self) -> None:
        self.events.clear()

    def show(self) -> None:
        for number, event in enumerate(self.events, 1):
            print(f"{number}. {event}")


class _RecordResponse:
    """ASGI middleware: notes when the response has gone out, and any error the app raised.

    A real server (uvicorn) logs an error raised after the response was sent; the client never
    hears of it. Noting both here lets a notebook show which came first.
    """

    def __init__(self, app: ASGIApp, timeline: Timeline) -> None:
        self.app = app
        self.timeline = timeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_sent: list[int] = []

        async def send_and_note(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                status_sent.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self.timeline.add(f"server: response sent to the client, status {status_sent[0]}")

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            self.timeline.add(f"server: the app raised {type(exc).__name__}: {exc}")
            raise


def commit_after_yield_app(database: SyncDatabase, timeline: Timeline) -> FastAPI:
    """``POST /request-scope/users`` and ``POST /function-scope/users``: the route only adds the
    user; the dependency commits after ``yield``, with the default scope or ``"function"``.

    A commit that fails (a duplicate email) is turned into a 409 by the dependency. Whether the
    client ever sees that 409 depends on the scope. Serve it with
    ``lab_client(app, raise_app_exceptions=False)`` to get what a real client would.
    """

    def get_db_committing() -> Iterator[Session]:
        """One session per request; the commit happens here, after the route has returned."""
        with database.SessionLocal() as session:
            yield session
            timeline.add("dependency: after yield, commit")
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                timeline.add("dependency: commit failed (IntegrityError), rolled back, raises 409")
                raise HTTPException(
                    status.HTTP_409_CONFLICT, detail="not saved: a unique value is already taken"
                ) from None
            timeline.add("dependency: committed")

    RequestScoped = Annotated[Session, Depends(get_db_committing)]
    FunctionScoped = Annotated[Session, Depends(get_db_committing, scope="function")]

    def add_user(payload: UserCreate, db: Session) -> UserCreate:
        db.add(User(**payload.model_dump()))
        timeline.add("route: user added to the session; route returns (its status: 201)")
        return payload

    app = FastAPI(title="Commit after yield")
    app.add_middleware(_RecordResponse, timeline=timeline)

    @app.post("/request-scope/users", status_code=status.HTTP_201_CREATED)
    def create_user_request_scope(payload: UserCreate, db: RequestScoped) -> UserCreate:
        return add_user(payload, db)

    @app.post("/function-scope/users", status_code=status.HTTP_201_CREATED)
    def create_user_function_scope(payload: UserCreate, db: FunctionScoped) -> UserCreate:
        return add_user(payload, db)

    return app


class AuthorOut(BaseModel):
    """A user and the titles of their posts, the shape a "list authors" page needs."""

    id: int
    name: str
    post_titles: list[str]


def _first_users(limit: int) -> Select[tuple[User]]:
    return select(User).order_by(User.id).limit(limit)


def _authors(db: Session, statement: Select[tuple[User]]) -> list[AuthorOut]:
    return [
        AuthorOut(id=user.id, name=user.name, post_titles=[post.title for post in user.posts])
        for user in db.scalars(statement)
    ]


def author_listing_app(database: SyncDatabase) -> FastAPI:
    """``GET /lazy/authors?limit=N`` (1 + N queries) and ``GET /selectin/authors?limit=N`` (2).

    Both are ``def`` routes on the sync setup and return the same JSON; only the loading differs.
    """
    DbSession = Annotated[Session, Depends(database.get_db)]
    Limit = Annotated[int, Query(ge=1, le=1000, description="How many users, by id.")]

    app = FastAPI(title="Authors and their posts")

    @app.get("/lazy/authors")
    def lazy_authors(db: DbSession, limit: Limit = 20) -> list[AuthorOut]:
        """Each ``user.posts`` read is a query of its own: the N+1 problem."""
        return _authors(db, _first_users(limit))

    @app.get("/selectin/authors")
    def selectin_authors(db: DbSession, limit: Limit = 20) -> list[AuthorOut]:
        """One query for the users, one ``... WHERE author_id IN (...)`` for all their posts."""
        return _authors(db, _first_users(limit).options(selectinload(User.posts)))

    return app


def connection_release_app(database: SyncDatabase, *, threads: int | None = None) -> FastAPI:
    """The main app's threadpool routes (``/threadpool/...``) and ``GET /released/users/{id}``.

    Both reads go through the ``get_db`` dependency, on one pool. ``/threadpool/users/{id}``
    returns and leaves the closing to the dependency, which FastAPI runs after the response, so
    the connection stays checked out while FastAPI validates the answer in a worker thread.
    ``/released/users/{id}`` closes the session once the answer is built, so the connection is
    back in the pool before that second trip to the threadpool. `threads` sets AnyIO's thread
    limiter while the app runs; an exhausted pool answers 503, as in the main app. The caller
    creates the tables and disposes `database`.
    """
    DbSession = Annotated[Session, Depends(database.get_db)]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with thread_limit(threads):
            yield

    app = FastAPI(title="When a connection goes back to the pool", lifespan=lifespan)
    add_error_handlers(app)

    app.include_router(threadpool.make_router(database))

    @app.get("/released/users/{user_id}")
    def read_user_released(user_id: UserId, db: DbSession) -> UserOut:
        user = db.get(User, user_id)
        if user is None:
            raise user_not_found(f"no user with id {user_id}")
        answer = UserOut.model_validate(user)
        db.close()  # the connection goes back now, not after the response
        return answer

    return app
