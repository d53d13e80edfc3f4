"""Notebook 03's apps: where the commit happens, and what a ``refresh()`` after it holds.

- `commit_after_yield_app`: the session dependency commits after its ``yield`` instead of the
  route committing. FastAPI (0.165, the pinned version) runs a ``yield`` dependency's exit code
  after the response has been sent (scope ``"request"``, the default) or before it
  (``Depends(..., scope="function")``). What the route, the dependency and the server did is
  logged, and a `Timeline` keeps it in order, so a notebook can show what the client had
  already received when the commit failed. Two more routes return the new `User` itself, as a
  create route usually does: FastAPI validates that answer before a ``scope="function"``
  dependency commits, so without a ``flush()`` in the route it has no id yet.
- `refresh_after_commit_app`: ``commit(); refresh(user); return user`` beside the threadpool
  setup's ``POST /users``, which reads its answer before committing. The timeline adds when a
  pooled connection is checked out and returned, and how many are checked out when the response
  goes out and when the request ends.

Each lesson's routes and dependencies are module-level functions (a notebook prints them with
`inspect.getsource`), using the shop app's `SessionDep`; each app factory swaps in a database of
the lab's with ``app.dependency_overrides``, as `create_app` does.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labkit.app.databases import SyncDatabase
from labkit.lessons.timeline import Timeline, _LogResponse, _pool_logged, lesson_lifespan, log
from labkit.shop import threadpool
from labkit.shop.database import SessionDep, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import User, UserCreate, UserOut


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
