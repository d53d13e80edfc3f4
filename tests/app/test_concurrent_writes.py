"""Concurrent writes on SQLite lose nothing and double nothing, through every setup.

SQLite lets one writer at a time hold the file's write lock. A writer that finds the lock taken
waits for it, up to sqlite3's ``timeout`` (5 s by default, which the shop app's ``connect_args``
writes out), instead of failing at once with "database is locked". With that wait, 500
concurrent ``POST``s all succeed; without it, many are refused, and the refusal is a 503 a
client can retry. Either way the rows afterwards are exactly the ``201`` answers. (WAL, which
labkit also sets, lets a writer commit while others read: it is not what makes writers wait.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from support import assert_nothing_held

from labkit.app.client import lab_client
from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions
from labkit.bench.setups import SETUPS
from labkit.settings import sqlite_url
from labkit.shop.database import SQLITE_TIMEOUT_S
from labkit.shop.models import User

pytestmark = pytest.mark.anyio

CONCURRENT_POSTS = 500

POOL_TIMEOUT_S = 10.0
"""Longer than 500 writes take to queue through 15 connections on a busy machine, and short
enough that a pool deadlock shows as 503s inside the run's budget: see `post_concurrently`."""

RUN_BUDGET_S = 30.0


def make_app(tmp_path: Path, sqlite_timeout_s: float | None = None) -> LabApp:
    options = EngineOptions(pool_timeout=POOL_TIMEOUT_S, sqlite_timeout_s=sqlite_timeout_s)
    return create_app(sqlite_url(tmp_path / "lab.db"), options)


async def post_concurrently(
    client: httpx.AsyncClient, setup: str, count: int
) -> list[httpx.Response]:
    """`count` POSTs of new users, all sent at once, each with an email of its own.

    A request holding a pooled connection while it waits for the event loop or a worker thread
    (the blocking setup reading `user` after `commit()` did) deadlocks the pool at this
    concurrency until ``pool_timeout``; 30 s a time would stall the suite. With a 10 s timeout a
    deadlock still shows, as 503s (or a run that overruns its budget), which fails.
    """
    async with asyncio.timeout(RUN_BUDGET_S):
        return await asyncio.gather(
            *(
                client.post(
                    f"/{setup}/users",
                    json={"name": f"Writer {i}", "email": f"writer{i}.{setup}@example.com"},
                )
                for i in range(count)
            )
        )


def assert_rows_are_exactly_the_successes(
    app: LabApp, setup: str, responses: list[httpx.Response]
) -> list[httpx.Response]:
    """Every answer is a 201 or a retryable 503; the stored rows are the 201s, once each.

    Returns the 503 answers.
    """
    refused = [r for r in responses if r.status_code != 201]
    for response in refused:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]
        assert response.json()["detail"].endswith("; retry")
    created = {(r.json()["id"], r.json()["email"]) for r in responses if r.status_code == 201}
    with app.sync_db.SessionLocal() as session:
        rows = session.execute(
            select(User.id, User.email).where(User.email.like(f"writer%.{setup}@example.com"))
        ).all()
    assert len(rows) == len(created)  # nothing doubled
    assert {tuple(row) for row in rows} == created  # nothing lost, nothing saved but refused
    assert_nothing_held(app)
    return refused


async def test_sqlite_connections_use_wal_and_wait_for_the_write_lock(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with lab_client(app):
        with app.sync_db.engine.connect() as conn:
            sync_settings = (
                conn.scalar(text("PRAGMA journal_mode")),
                conn.scalar(text("PRAGMA busy_timeout")),
            )
        async with app.async_db.engine.connect() as aconn:
            async_settings = (
                await aconn.scalar(text("PRAGMA journal_mode")),
                await aconn.scalar(text("PRAGMA busy_timeout")),
            )
    assert sync_settings == async_settings == ("wal", SQLITE_TIMEOUT_S * 1000)


@pytest.mark.slow
@pytest.mark.parametrize("setup", SETUPS)
async def test_500_concurrent_posts_are_all_saved_once(tmp_path: Path, setup: str) -> None:
    app = make_app(tmp_path)
    async with lab_client(app) as client:
        responses = await post_concurrently(client, setup, CONCURRENT_POSTS)
    refused = assert_rows_are_exactly_the_successes(app, setup, responses)
    assert refused == []  # sqlite3's timeout: writers queue for the lock instead of failing


@pytest.mark.parametrize("setup", ["threadpool", "async"])
async def test_without_the_wait_writers_get_a_retryable_503_and_nothing_is_lost(
    tmp_path: Path, setup: str
) -> None:
    """The blocking setup is left out: it writes on the one event-loop thread, one request at a
    time, so its writers never meet at the lock (the same reason it is slow)."""
    app = make_app(tmp_path, sqlite_timeout_s=0)
    async with lab_client(app) as client:
        responses = await post_concurrently(client, setup, CONCURRENT_POSTS // 2)
    refused = assert_rows_are_exactly_the_successes(app, setup, responses)
    assert refused, "no writer met a locked database: the test did not test the refusal"
    assert {r.json()["detail"] for r in refused} == {
        "the database is unavailable (SQLITE_BUSY); retry"
    }
