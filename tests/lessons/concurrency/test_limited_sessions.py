"""FastAPI's ``max_concurrency`` on the session dependency: no request waits in the pool, one
waiting for a slot holds no thread, and a request that needs two slots can wait for ever.

No ``from __future__ import annotations``: FastAPI resolves a route's ``Annotated`` dependency
declared inside a test at runtime."""

import asyncio
import time
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy.engine import URL

from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.lessons.concurrency.limited_sessions import (
    LIMITED,
    answered_within,
    limit_runs,
    limited_app,
    twice_limited_app,
)

pytestmark = pytest.mark.anyio

TWO = {"pool_size": 2, "max_overflow": 0}


async def test_past_threads_plus_pool_the_limited_def_route_fails_none_on_few_threads(
    db_url: URL,
) -> None:
    options = EngineOptions(latency_ms=5, pool_timeout=0.5, **TWO)
    app = limited_app(db_url, options, threads=4)
    runs = await limit_runs(app, [(LIMITED["threadpool"], 12)], requests=24)
    run = runs[LIMITED["threadpool"], 12]
    assert (run.ok, run.failed) == (24, 0)
    assert run.peak_threads <= 2  # waiting for a slot takes no worker thread
    assert app.sync_db.ledger.open == 0


async def test_a_limit_given_wins_over_the_pool_size(db_url: URL) -> None:
    app = limited_app(db_url, EngineOptions(latency_ms=5, **TWO), limit=1)
    runs = await limit_runs(app, [(LIMITED["threadpool"], 4), (LIMITED["blocking"], 4)], requests=8)
    assert runs[LIMITED["threadpool"], 4].peak_threads == 1  # one request at a time
    assert all(run.ok == 8 for run in runs.values())
    assert app.sync_db.ledger.open == 0


@pytest.mark.slow  # waits out a pool timeout
async def test_a_limit_in_front_of_the_async_pool_queues_what_the_pool_would_fail(
    db_url: URL,
) -> None:
    options = EngineOptions(latency_ms=10, pool_timeout=0.02, **TWO)
    runs = await limit_runs(
        limited_app(db_url, options), [("async", 12), (LIMITED["async"], 12)], requests=36
    )
    assert runs["async", 12].failed >= 1
    assert runs[LIMITED["async"], 12].failed == 0
    assert runs[LIMITED["async"], 12].p99_ms > 1000 * options.pool_timeout


async def test_two_uncached_slots_per_request_wait_for_each_other_for_ever(db_url: URL) -> None:
    database = SyncDatabase.create(db_url, EngineOptions(**TWO))
    try:
        create_and_seed(database.engine)
        app = twice_limited_app(database, limit=2)
        assert await answered_within(app, ["/twice/users/1"], 0.3) == 1
        four = [f"/twice/users/{user_id}" for user_id in range(1, 5)]
        assert await answered_within(app, four, 0.3) < len(four)
        assert database.ledger.open == 0  # the requests given up on closed their sessions
    finally:
        database.dispose()


async def test_apps_that_include_the_same_limited_routes_share_one_limit() -> None:
    """The semaphore belongs to the ``Depends`` object (per event loop), not to an app: two
    apps with the same router, as `create_app`'s copies of the shop app have, share it."""

    def slow_dependency() -> Iterator[None]:
        time.sleep(0.1)
        yield

    Limited = Annotated[None, Depends(slow_dependency, max_concurrency=2)]
    router = APIRouter()

    @router.get("/")
    def read(_slot: Limited) -> None:
        return None

    first, second = FastAPI(), FastAPI()
    first.include_router(router)
    second.include_router(router)
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) for app in (first, second)]
    start = time.perf_counter()
    await asyncio.gather(*(client.get("http://lab/") for client in clients for _ in range(2)))
    took = time.perf_counter() - start
    for client in clients:
        await client.aclose()
    assert took >= 0.19  # four requests through two slots: two rounds, not one
