"""`create_app()`: one FastAPI app with the lab's three session setups side by side.

The app runs in the notebook's own process (driven through `httpx.ASGITransport`), so a
learner can time it, probe its event loop and inspect its pools from the next cell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy.engine import URL

from .cancellation import FinishEveryRequest
from .database import AsyncDatabase, EngineOptions, SyncDatabase
from .errors import add_error_handlers
from .routes import async_session, blocking, threadpool
from .seed import create_and_seed
from .timing import ServerTimingMiddleware


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


def create_app(
    database_url: str | URL | None = None, *, threads: int | None = None, **engine_options: Any
) -> FastAPI:
    """Build the lab's app on `database_url` (default: `DATABASE_URL`, else the SQLite file).

    `engine_options` are :class:`labkit.database.EngineOptions`: ``latency_ms`` (simulated wait
    per statement), ``pool_size``, ``max_overflow``, ``pool_timeout``, ``pool_pre_ping``,
    ``echo``. Both setups get the same options, so they differ only in how they wait.

    The blocking and threadpool routes share one sync setup, as one app with one `get_db`
    would; the async routes have their own engine on the async driver. Tables are created
    and seeded when the app starts (its lifespan), and both engines disposed when it stops.

    `threads` sets the size of AnyIO's default thread limiter (40) for as long as the app runs
    (see `thread_limit`).

    Every response carries a ``Server-Timing`` header: database time and total (labkit.timing).
    """
    sync_db = SyncDatabase.create(database_url, **engine_options)
    async_db = AsyncDatabase.create(database_url, **engine_options)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        create_and_seed(sync_db.engine)
        try:
            async with thread_limit(threads):
                yield
        finally:
            sync_db.dispose()
            await async_db.dispose()

    app = FastAPI(title="The session lab", lifespan=lifespan)
    app.state.engine_options = EngineOptions(**engine_options)
    app.state.threads = threads
    app.state.sync_db = sync_db
    app.state.async_db = async_db
    add_error_handlers(app)
    app.add_middleware(ServerTimingMiddleware)
    app.add_middleware(FinishEveryRequest)  # outermost: a client's cancel reaches none of the app

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Touches no database: how long it takes shows how free the event loop is."""
        return {"status": "ok"}

    app.include_router(blocking.make_router(sync_db))
    app.include_router(threadpool.make_router(sync_db))
    app.include_router(async_session.make_router(async_db))
    return app
