"""How many sessions a request gets: FastAPI's dependency cache (one; two with
``use_cache=False``, or with ``scope="function"`` on one side only; the cache keeps the first
value), and a `scoped_session` registry under the threadpool (one per thread, which is not one
per request)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL
from support import assert_nothing_held

from labkit.app.client import lab_client
from labkit.app.create import thread_limit
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.bench.load import run_load
from labkit.instruments.watch import collect_log, watch_engine
from labkit.lessons.lifecycle.shared_sessions import (
    CLOSED_DOMAIN,
    dependency_cache_app,
    scoped_session_app,
)
from labkit.shop.models import User

pytestmark = pytest.mark.anyio


def make_database(url: URL, **options: float) -> SyncDatabase:
    database = SyncDatabase.create(url, EngineOptions(**options))
    create_and_seed(database.engine)
    return database


def saved(database: SyncDatabase, email: str) -> int:
    with database.SessionLocal() as session:
        return session.scalar(select(func.count()).where(User.email == email)) or 0


@pytest.mark.parametrize(
    ("route", "user_call", "route_call"),
    [
        ("cached", 1, 1),
        ("uncached", 2, 1),
        ("uncached-first", 1, 1),  # the user's get_db runs first; the route gets its session
        ("mixed-scope", 1, 2),  # the scope is part of the cache key: two keys, two calls
        ("function-scope", 1, 1),
    ],
)
async def test_which_call_of_get_db_made_the_users_and_the_routes_session(
    db_url: URL, route: str, user_call: int, route_call: int
) -> None:
    database = make_database(db_url)
    try:
        async with lab_client(dependency_cache_app(database)) as client:
            before = database.ledger.opened
            response = await client.get(f"/{route}/my/posts", params={"user_id": 1})
        assert response.status_code == 200
        answer = response.json()
        assert (answer["user_session"] - before, answer["route_session"] - before) == (
            user_call,
            route_call,
        )
        assert answer["one_session"] is (user_call == route_call)
        assert database.ledger.opened - before == max(user_call, route_call)
        assert_nothing_held(database)
    finally:
        database.dispose()


async def test_the_dependency_cache_keeps_the_first_session_not_the_latest(db_url: URL) -> None:
    database = make_database(db_url)
    try:
        async with lab_client(dependency_cache_app(database)) as client:
            response = await client.get("/first-or-latest/sessions")
        assert response.json() == {"before": 1, "own": 2, "after": 1}
        assert_nothing_held(database)
    finally:
        database.dispose()


async def test_two_sessions_per_request_drain_the_pool_at_half_the_clients(db_url: URL) -> None:
    """A pool of 4 (2 + 2): two clients need 4 connections at once, three need 6, on the
    uncached route and on the one that mixes scopes alike."""
    database = make_database(db_url, latency_ms=40, pool_size=2, max_overflow=2, pool_timeout=0.01)
    try:
        async with lab_client(dependency_cache_app(database)) as client:
            found = {}
            runs = [("cached", 3), ("uncached", 2), ("uncached", 3)]
            runs += [("mixed-scope", 2), ("mixed-scope", 3), ("function-scope", 3)]
            for route, clients in runs:
                with collect_log("labkit.shop.errors"), watch_engine(database.engine) as counts:
                    path = f"/{route}/my/posts?user_id={{id}}"
                    result = await run_load(client, path, requests=clients, concurrency=clients)
                found[route, clients] = (result.statuses.get(503, 0), counts.peak_checked_out)
        assert found[("cached", 3)] == (0, 3)
        assert found[("uncached", 2)] == (0, 4)
        assert found[("uncached", 3)][0] >= 1
        assert found[("mixed-scope", 2)] == (0, 4)
        assert found[("mixed-scope", 3)][0] >= 1
        assert found[("function-scope", 3)] == (0, 3)
        assert_nothing_held(database)
    finally:
        database.dispose()


async def test_a_registry_session_commits_what_a_refused_request_added(db_url: URL) -> None:
    database = make_database(db_url)
    try:
        async with lab_client(scoped_session_app(database)) as client, thread_limit(1):
            outcomes = {}
            for route in ["scoped", "scoped-removed", "per-request"]:
                refused = {"name": "Refused", "email": f"{route}@{CLOSED_DOMAIN}"}
                first = await client.post(f"/{route}/users", json=refused)
                accepted = {"name": "Accepted", "email": f"{route}@example.org"}
                second = await client.post(f"/{route}/users", json=accepted)
                outcomes[route] = (
                    first.status_code,
                    second.status_code,
                    saved(database, refused["email"]),
                    database.ledger.open,  # sessions left open after both requests ended
                    database.engine.pool.checkedout(),
                )
        # Never removed, the session stays on its worker thread, with a connection (the second
        # request read its answer after the commit), and commits what the first request added.
        # The next route's remove(), on the same thread, closes it.
        assert outcomes == {
            "scoped": (403, 201, 1, 1, 1),
            "scoped-removed": (403, 201, 0, 0, 0),
            "per-request": (403, 201, 0, 0, 0),
        }
    finally:
        database.dispose()


async def test_a_dependency_and_its_route_can_get_different_registry_sessions(
    db_url: URL,
) -> None:
    database = make_database(db_url)
    try:
        async with lab_client(scoped_session_app(database)) as client:
            alone = (await client.get("/scoped/same-session")).json()["same_session"]
            together = await asyncio.gather(
                *(client.get("/scoped/same-session") for _ in range(10))
            )
        assert alone is True
        assert not all(response.json()["same_session"] for response in together)
    finally:
        database.dispose()
