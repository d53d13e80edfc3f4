"""`create_app()`: the shop app (labkit.shop.main), copied, with the lab's instruments on.

The copy has the shop app's routes, error handlers and ``/health``, unchanged. What the lab adds
comes from outside, the way FastAPI lets anyone change an app it did not write:

- ``app.dependency_overrides``: `get_db` and `get_async_db` give sessions from a `SyncDatabase`
  and an `AsyncDatabase` on the lab's database, with its options and a session ledger;
- middleware added after the fact: ``Server-Timing`` and `FinishEveryRequest`;
- API docs served from installed files, not a CDN (`copy_of_shop`);
- its own lifespan: tables created and seeded, AnyIO's thread limit set, the requests' task
  group open, engines disposed.

Each call makes a new copy, so a notebook can run several, with other options, side by side.
The app runs in the notebook's own process (driven through `httpx.ASGITransport`), so a reader
can time it, probe its event loop and inspect its pools from the next cell.

`create_app` returns a `LabApp`: the FastAPI app and what it was made with (its databases,
options and thread limit), as typed fields. It is an ASGI app itself, so anything that serves
or drives an app takes it as it is; whatever wants the databases asks the `LabApp`, not the
FastAPI app's untyped ``app.state``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import URL
from starlette.types import Receive, Scope, Send

from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.instruments.finishing import FinishEveryRequest, RequestGroup
from labkit.instruments.server_timing import ServerTimingMiddleware
from labkit.shop import async_session, blocking, threadpool
from labkit.shop import database as shop_database
from labkit.shop import main as shop_main


@asynccontextmanager
async def thread_limit(threads: int | None) -> AsyncIterator[None]:
    """Set AnyIO's default thread limiter (40) to `threads` for the block, then put it back.

    The limiter caps how many ``def`` routes and sync dependencies run at once. It belongs to
    the event loop, and a notebook's loop outlives any one app, hence the restoring.
    """
    limiter = anyio.to_thread.current_default_thread_limiter()
    default_threads = limiter.total_tokens
    if threads is not None:
        limiter.total_tokens = threads
    try:
        yield
    finally:
        limiter.total_tokens = default_threads


def copy_of_shop() -> FastAPI:
    """A new app with the shop app's routes, error handlers and middleware, and overrides of its
    own, put together as labkit/shop/main.py puts its `app` together: the same routers, then
    ``/health`` (tests/app/test_copy.py holds the two apps' routes side by side).

    It does not include the shop app as one router, though FastAPI allows it: FastAPI
    0.165 keeps an included router as a branch of its own, walked on every request, so each route
    would sit one level deeper than in the shop app, and every request would pay for that
    walk, a tenth of what a read costs at L = 0 (notebook 05 measures what the lab's copy costs
    against the shop app served bare).

    Its API docs pages (``/docs``, ``/redoc``) load their scripts from files installed with
    fastapi-offline, not from a CDN as the shop app's do, so they open on a machine without
    internet. The shop app's lifespan is replaced by the caller's.
    """
    shop = shop_main.app
    copy = FastAPIOffline(title=shop.title)  # its /docs and /redoc first: they hide the app's
    for router in (blocking.router, threadpool.router, async_session.router):
        copy.include_router(router)
    copy.add_api_route("/health", shop_main.health, methods=["GET"])
    copy.exception_handlers.update(shop.exception_handlers)
    copy.user_middleware = list(shop.user_middleware)
    return copy


@dataclass(frozen=True, eq=False)
class LabApp:
    """The shop app as `create_app` made it: the FastAPI app and the databases behind it.

    Calling it is calling `fastapi`, so it serves as an ASGI app (``lab_client(app)``,
    uvicorn). Routes, middleware and dependency overrides are added on `fastapi`.
    """

    fastapi: FastAPI
    sync_db: SyncDatabase
    """The blocking and threadpool setups' database (`get_db`)."""
    async_db: AsyncDatabase
    """The async setup's database (`get_async_db`)."""
    options: EngineOptions
    """Both databases' engine options: simulated latency, pool size, ..."""
    threads: int | None
    """AnyIO's thread limit while the app runs (None: AnyIO's default, 40)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fastapi(scope, receive, send)


def create_app(
    database_url: str | URL | None = None,
    options: EngineOptions | None = None,
    *,
    threads: int | None = None,
    seed: bool = True,
) -> LabApp:
    """The shop app on `database_url` (default: `DATABASE_URL`, else the SQLite file).

    `options` (:class:`EngineOptions`): simulated latency per statement, pool size and overflow,
    pool timeout, pre-ping, echo. Both setups get the same options, so they differ only in how
    they wait. The blocking and threadpool routes share one sync setup, as one app with one
    `get_db` does; the async routes have their own engine on the async driver. Tables are
    created and seeded when the app starts (its lifespan), unless `seed` is False (where
    worker processes start together, their parent seeds once, before them: two processes
    creating one table at once collide), and both engines disposed when it stops.
    `threads` sets AnyIO's thread limit while the app runs (see `thread_limit`).

    Every response carries a ``Server-Timing`` header: database time and total.
    """
    options = options or EngineOptions()
    sync_db = SyncDatabase.create(database_url, options)
    async_db = AsyncDatabase.create(database_url, options)

    requests = RequestGroup()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if seed:
            create_and_seed(sync_db.engine)
        try:
            async with thread_limit(threads), requests.open():
                yield
        finally:
            sync_db.dispose()
            await async_db.dispose()

    app = copy_of_shop()
    app.router.lifespan_context = lifespan
    app.dependency_overrides[shop_database.get_db] = sync_db.get_db
    app.dependency_overrides[shop_database.get_async_db] = async_db.get_async_db
    app.add_middleware(ServerTimingMiddleware)
    # Outermost: a client's cancel reaches none of the app.
    app.add_middleware(FinishEveryRequest, requests=requests)
    return LabApp(app, sync_db, async_db, options, threads)
