"""A limit in front of the pool: FastAPI's ``Depends(get_db, max_concurrency=N)``.

Since FastAPI 0.165 a dependency can say how many of its calls may run at once. A call past
the limit waits for a slot on an AnyIO semaphore, on the event loop, and holds no worker thread
while it waits. With ``N`` no larger than the pool (``pool_size + max_overflow``), no request
ever waits in the pool itself, so neither sync setup's pool deadlock can happen: requests queue
in front of the pool instead, with no timeout.

What the slot covers, as FastAPI 0.165 implements it (``_solve_generator`` in
``fastapi/dependencies/utils.py``, ``_DependencyConcurrency`` in ``fastapi/concurrency.py``):

- it is taken before the dependency's setup is handed to a worker thread;
- for a ``yield`` dependency it is given back once the code after ``yield`` has run: with the
  default scope (``"request"``), after the response was sent, so it covers the route, the
  validation of its answer and the session's close;
- there is one semaphore per ``Depends(...)`` object and per event loop (an AnyIO ``RunVar``):
  routes share a limit by sharing one ``Annotated`` alias, and an override of the dependency
  (``app.dependency_overrides``) keeps the limit of the ``Depends`` it replaces;
- a value FastAPI reuses within a request (``use_cache=True``, the default) takes no second
  slot; with ``use_cache=False`` each use takes one.

`limited_router` declares the limited session dependencies and a read for each setup.
`limited_app` puts them into `create_app`'s app, beside the unlimited routes and the read that
gives its connection back before it returns; `limit_runs` loads a list of routes on it.
`twice_limited_app` serves a read that asks for two sessions from a limited dependency that is
not cached: each request may hold one slot while it waits for another.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies, some declared inside a function, at runtime.
"""

import asyncio
from collections.abc import Sequence
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from labkit.app.client import BASE_URL, lab_client
from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.bench.load import run_load
from labkit.bench.results import LoadResult
from labkit.instruments.watch import collect_log
from labkit.lessons.concurrency.released import released_router
from labkit.shop.database import get_async_db, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import User, UserId, UserOut

LIMITED = {
    "blocking": "/limited/blocking/users/{id}",
    "threadpool": "/limited/threadpool/users/{id}",
    "async": "/limited/async/users/{id}",
}
"""The limited read of each setup, as `run_load` takes a path."""


def limited_router(limit: int) -> APIRouter:
    """Each setup's ``GET /users/{id}`` under ``/limited``, its session dependency limited to
    `limit` calls at once. The routes are the shop app's; only the dependency differs.

    Each call makes new ``Depends`` objects, so each app gets semaphores of its own.
    """
    LimitedSessionDep = Annotated[Session, Depends(get_db, max_concurrency=limit)]
    LimitedAsyncSessionDep = Annotated[AsyncSession, Depends(get_async_db, max_concurrency=limit)]
    router = APIRouter(prefix="/limited")

    @router.get("/threadpool/users/{user_id}")
    def read_user(user_id: UserId, db: LimitedSessionDep) -> UserOut:
        user = db.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
        return UserOut.model_validate(user)

    @router.get("/blocking/users/{user_id}")
    async def read_user_blocking(user_id: UserId, db: LimitedSessionDep) -> UserOut:
        user = db.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
        return UserOut.model_validate(user)

    @router.get("/async/users/{user_id}")
    async def read_user_async(user_id: UserId, db: LimitedAsyncSessionDep) -> UserOut:
        user = await db.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
        return UserOut.model_validate(user)

    return router


def limited_app(
    database_url: str | URL | None,
    options: EngineOptions,
    *,
    threads: int | None = None,
    limit: int | None = None,
) -> LabApp:
    """`create_app`'s app, with ``/released/users/{id}`` and the `limited_router` routes.

    `limit` defaults to what the pool can lend at once, ``pool_size + max_overflow``: the
    largest limit under which no request waits in the pool. FastAPI cannot read it from the
    engine; the app that makes the engine has to pass it on.
    """
    app = create_app(database_url, options, threads=threads)
    app.fastapi.include_router(released_router)
    app.fastapi.include_router(limited_router(options.pool if limit is None else limit))
    return app


async def limit_runs(
    app: LabApp, points: Sequence[tuple[str, int]], *, requests: int
) -> dict[tuple[str, int], LoadResult]:
    """`requests` GETs for each ``(route, clients)`` of `points`, one run after the other, on
    `app` (a setup's name or a path, as `run_load` takes it). The app's log line per 503 is
    kept out of the output: the results count the failures."""
    results = {}
    with collect_log("labkit.shop.errors"):
        async with lab_client(app) as client:
            for route, clients in points:
                results[route, clients] = await run_load(
                    client, route, requests=requests, concurrency=clients, app=app
                )
    return results


def twice_limited_app(database: SyncDatabase, *, limit: int) -> FastAPI:
    """``GET /twice/users/{id}``: a ``def`` read with two sessions from one limited dependency
    that FastAPI does not cache (``use_cache=False``), on `database`.

    A request takes its first slot, then waits for a second. Once every slot is held by a
    request waiting for another, nothing moves, and no timeout ends it: the semaphore has none.
    The app is a plain one, without the lab's `FinishEveryRequest`, so a client that gives up
    cancels its request, and the request gives back its slot and closes its session. The
    caller creates the tables and disposes `database`.
    """
    TwoSessionsDep = Annotated[Session, Depends(get_db, use_cache=False, max_concurrency=limit)]
    router = APIRouter()

    @router.get("/twice/users/{user_id}")
    def read_user_twice(user_id: UserId, db: TwoSessionsDep, other: TwoSessionsDep) -> UserOut:
        user = db.get(User, user_id)
        if user is None or other.get(User, user_id) is None:
            raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
        return UserOut.model_validate(user)

    app = FastAPI(title="Two sessions, one limit")
    add_error_handlers(app)
    app.include_router(router)
    app.dependency_overrides[get_db] = database.get_db
    return app


async def answered_within(app: FastAPI, paths: Sequence[str], seconds: float) -> int:
    """Send `paths` to `app` at once; how many were answered within `seconds`. The rest are
    cancelled, requests and all (`app` must not be one of `create_app`'s, whose requests run on
    when their client leaves)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        tasks = [asyncio.create_task(client.get(path)) for path in paths]
        done, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return sum(task.result().status_code == 200 for task in done)
