"""No session and no pooled connection outlives its request, however the request ends.

A load of requests goes through each setup, mixed so that every way of ending happens: the route
raises after its queries, the pool has no connection free in time (503), the client stops waiting
(its timeout), or the client cancels at a random moment. When the app has finished its cleanup,
the session ledgers show every session closed and the pools every connection checked in; no
connection was left for the garbage collector, and the pool still serves.

The failing routes are test-only, added beside the lab's own routes of a `create_app` app, on the
same `SyncDatabase` and `AsyncDatabase`, so they run with the lab's middleware and error handlers.
(No ``from __future__ import annotations`` here: FastAPI must resolve the routes' ``Annotated``
dependencies at runtime.)
"""

import asyncio
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends
from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from support import every_backend, held

from labkit.app.client import lab_client
from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions
from labkit.bench.setups import SETUPS
from labkit.settings import sqlite_url
from labkit.shop.models import User

pytestmark = pytest.mark.anyio

REQUESTS_PER_SETUP = 48
LATENCY_MS = 10  # per statement; each failing route runs two
CLIENT_TIMEOUT_S = 0.015  # shorter than the two statements: these requests are given up
CANCEL_WITHIN_S = 0.03
CLEANUP_BUDGET_S = 15.0
ENGINE_OPTIONS = {
    "latency_ms": LATENCY_MS,
    "pool_size": 2,  # far fewer connections than requests: some wait past pool_timeout
    "max_overflow": 0,
    "pool_timeout": 0.05,
}


class RouteFailed(RuntimeError):
    """Raised on purpose inside a route, after it has used its session."""


def add_failing_routes(app: LabApp) -> None:
    """``GET /{setup}/work?fail=``: two queries on the setup's session, then fail if asked.

    Two statements, each with the simulated wait, so that a cancellation or a timeout can fall
    between them while the session holds a pooled connection.
    """
    sync_db, async_db = app.sync_db, app.async_db
    SyncSession = Annotated[Session, Depends(sync_db.get_db)]
    AsyncSessionDep = Annotated[AsyncSession, Depends(async_db.get_async_db)]
    count_users = select(func.count()).select_from(User)

    @app.fastapi.get("/blocking/work")
    async def blocking_work(db: SyncSession, fail: bool = False) -> dict[str, int]:
        users = db.scalar(count_users) + db.scalar(count_users)
        if fail:
            raise RouteFailed("raised inside the route")
        return {"users": users}

    @app.fastapi.get("/threadpool/work")
    def threadpool_work(db: SyncSession, fail: bool = False) -> dict[str, int]:
        users = db.scalar(count_users) + db.scalar(count_users)
        if fail:
            raise RouteFailed("raised inside the route")
        return {"users": users}

    @app.fastapi.get("/async/work")
    async def async_work(db: AsyncSessionDep, fail: bool = False) -> dict[str, int]:
        users = await db.scalar(count_users) + await db.scalar(count_users)
        if fail:
            raise RouteFailed("raised inside the route")
        return {"users": users}


async def held_after_cleanup(app: LabApp) -> dict[str, int]:
    """`held` once the app has finished the requests whose client left (they run on to their
    end, as under a server), or when the budget for that is spent."""
    deadline = time.monotonic() + CLEANUP_BUDGET_S
    while any(held(app).values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return held(app)


async def one_request(client: httpx.AsyncClient, setup: str, kind: str, delay: float) -> str:
    """Send one request ending the way `kind` asks; return how it really ended."""
    request = asyncio.create_task(client.get(f"/{setup}/work", params={"fail": kind == "raise"}))
    try:
        if kind == "cancel":
            await asyncio.sleep(delay)
            request.cancel()
        if kind == "timeout":
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                response = await request
        else:
            response = await request
    except RouteFailed:
        return "raised in route"
    except TimeoutError:
        return "client timed out"
    except asyncio.CancelledError:
        return "client cancelled"
    return f"{response.status_code}"


# The blocking setup's requests take turns on the event loop; many wait out ``pool_timeout``.
SETUPS_BLOCKING_SLOW = [
    pytest.param(setup, marks=pytest.mark.slow) if setup == "blocking" else setup
    for setup in SETUPS
]


@every_backend
@pytest.mark.parametrize("setup", SETUPS_BLOCKING_SLOW)
async def test_every_session_closes_and_every_connection_returns_after_failures(
    db_url: URL, setup: str, recwarn: pytest.WarningsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # e.g. SQLAlchemy's pool failing a reset, asyncio losing a task
    app = create_app(db_url, EngineOptions(**ENGINE_OPTIONS))
    add_failing_routes(app)
    draw = random.Random(setup)  # varied moments, the same ones every run
    kinds = ["ok", "raise", "timeout", "cancel"] * (REQUESTS_PER_SETUP // 4)
    async with lab_client(app) as client:
        # One request that raises and one that succeeds, alone: under the load below either may
        # instead find no connection free in time, and the test must see both endings.
        endings = Counter([await one_request(client, setup, kind, 0) for kind in ("raise", "ok")])
        endings.update(
            await asyncio.gather(
                *(
                    one_request(client, setup, kind, draw.uniform(0, CANCEL_WITHIN_S))
                    for kind in kinds
                )
            )
        )
        left_over = await held_after_cleanup(app)
        after = await client.get(f"/{setup}/users/1")

    expected = {"200", "503", "raised in route", "client timed out", "client cancelled"}
    assert set(endings) == expected, endings  # every way of ending happened, and no other
    ledger = app.async_db.ledger if setup == "async" else app.sync_db.ledger
    assert ledger.opened >= endings["200"] + endings["raised in route"] + 1  # + the last request
    assert left_over == dict.fromkeys(left_over, 0), (left_over, endings)
    assert after.status_code == 200
    assert not [w for w in recwarn if "garbage collector" in str(w.message)]
    assert not caplog.records, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("setup", SETUPS)
async def test_a_request_cancelled_mid_query_closes_its_session_only_after_the_route(
    tmp_path: Path, setup: str
) -> None:
    """The sharpest case of the load above, made certain: the client cancels while the route's
    first query waits. The session must stay open until the route is done with it; closed early
    (under a ``def`` route whose worker thread runs on), the route's second query would check out
    a connection that nothing gives back."""
    app = create_app(sqlite_url(tmp_path / "lab.db"), EngineOptions(latency_ms=50))
    add_failing_routes(app)
    async with lab_client(app) as client:
        request = asyncio.create_task(client.get(f"/{setup}/work"))
        await asyncio.sleep(0.025)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        left_over = await held_after_cleanup(app)
    assert left_over == dict.fromkeys(left_over, 0)
    ledger = app.async_db.ledger if setup == "async" else app.sync_db.ledger
    assert ledger.opened == 1
