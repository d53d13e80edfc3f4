"""The lesson apps: where a commit after ``yield`` fails, what a route that returns the new user
needs, how long a refresh after commit keeps a connection, what lazy loading costs a listing, and
when a ``def`` route's connection goes back to the pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL
from support import assert_nothing_held

from labkit.app.client import lab_client
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.bench.load import run_load
from labkit.instruments.sqllog import capture_sql
from labkit.instruments.watch import collect_log
from labkit.lessons.commit import commit_after_yield_app, refresh_after_commit_app
from labkit.lessons.concurrency.released import connection_release_app
from labkit.lessons.loading import author_listing_app
from labkit.lessons.timeline import Timeline
from labkit.shop.models import User

pytestmark = pytest.mark.anyio

TAKEN = {"name": "Someone Else", "email": "user0001@example.com"}


@pytest.fixture
def database(db_url: URL) -> Iterator[SyncDatabase]:
    database = SyncDatabase.create(db_url)
    create_and_seed(database.engine)
    yield database
    database.dispose()


def count_with_email(database: SyncDatabase, email: str) -> int:
    with database.SessionLocal() as session:
        return session.scalar(select(func.count()).where(User.email == email)) or 0


async def test_request_scope_commit_fails_after_the_client_already_got_201(database) -> None:
    timeline = Timeline()
    app = commit_after_yield_app(database, timeline)
    async with lab_client(app, raise_app_exceptions=False) as client:
        response = await client.post("/request-scope/users", json=TAKEN)
    assert response.status_code == 201
    assert response.json() == TAKEN
    sent = timeline.events.index("server: response sent to the client, status 201")
    failed = timeline.events.index(
        "dependency: commit failed (IntegrityError), rolled back, raises 409"
    )
    assert sent < failed
    assert timeline.events[-1].startswith("server: the app raised RuntimeError")
    assert count_with_email(database, TAKEN["email"]) == 1
    assert_nothing_held(database)


async def test_function_scope_commit_failure_reaches_the_client_as_409(database) -> None:
    timeline = Timeline()
    app = commit_after_yield_app(database, timeline)
    async with lab_client(app) as client:
        response = await client.post("/function-scope/users", json=TAKEN)
    assert response.status_code == 409
    assert timeline.events[-1] == "server: response sent to the client, status 409"
    assert_nothing_held(database)


@pytest.mark.parametrize("scope", ["request", "function"])
async def test_commit_after_yield_saves_a_new_user_in_either_scope(database, scope: str) -> None:
    new = {"name": "Edgar Codd", "email": f"codd.{scope}@example.com"}
    async with lab_client(commit_after_yield_app(database, Timeline())) as client:
        response = await client.post(f"/{scope}-scope/users", json=new)
    assert response.status_code == 201
    assert count_with_email(database, new["email"]) == 1


NEW = {"name": "Alan Turing", "email": "alan@example.com"}


async def test_function_scope_route_returning_an_unflushed_user_answers_500_and_saves_nothing(
    database,
) -> None:
    timeline = Timeline()
    app = commit_after_yield_app(database, timeline)
    async with lab_client(app, raise_app_exceptions=False) as client:
        response = await client.post("/function-scope/unflushed/users", json=NEW)
    assert response.status_code == 500
    assert timeline.events[-1] == (
        "server: the app raised ResponseValidationError: "
        "response.id: Input should be a valid integer (got None)"
    )
    assert not [event for event in timeline.events if event.startswith("dependency:")]
    assert count_with_email(database, NEW["email"]) == 0
    assert_nothing_held(database)


async def test_function_scope_route_that_flushes_answers_the_new_id_and_409_for_a_duplicate(
    database,
) -> None:
    timeline = Timeline()
    async with lab_client(commit_after_yield_app(database, timeline)) as client:
        created = await client.post("/function-scope/flushed/users", json=NEW)
        committed_before_sent = timeline.events[-2:] == [
            "dependency: committed",
            "server: response sent to the client, status 201",
        ]
        timeline.clear()
        duplicate = await client.post("/function-scope/flushed/users", json=TAKEN)
    assert created.status_code == 201 and committed_before_sent
    with database.SessionLocal() as session:
        stored = session.scalar(select(User.id).where(User.email == NEW["email"]))
    assert created.json() == {"id": stored, **NEW}
    assert duplicate.status_code == 409
    assert timeline.events == [
        "route: flush failed (IntegrityError), raises 409",
        "server: response sent to the client, status 409",
    ]
    assert count_with_email(database, TAKEN["email"]) == 1
    assert_nothing_held(database)


@pytest.mark.parametrize(
    ("path", "checked_out_while_sending", "checkouts"),
    [("/refreshed/users", 1, 2), ("/threadpool/users", 0, 1)],
)
async def test_refresh_after_commit_keeps_a_connection_until_the_request_ends(
    database, path: str, checked_out_while_sending: int, checkouts: int
) -> None:
    timeline = Timeline()
    async with lab_client(refresh_after_commit_app(database, timeline)) as client:
        response = await client.post(path, json=NEW)
    assert response.status_code == 201 and response.json()["email"] == NEW["email"]
    in_use = f"(connections checked out: {checked_out_while_sending})"
    sent = f"server: response sent to the client, status 201 {in_use}"
    returned = "pool: the connection goes back to the pool"
    after_sent = timeline.events[timeline.events.index(sent) + 1 :]
    assert after_sent.count(returned) == checked_out_while_sending
    assert timeline.events.count("pool: a connection is checked out") == checkouts
    assert after_sent[-1] == "server: request ended (connections checked out: 0)"
    assert count_with_email(database, NEW["email"]) == 1
    assert_nothing_held(database)


async def test_lazy_listing_sends_one_query_per_author_and_selectin_two(database) -> None:
    async with lab_client(author_listing_app(database)) as client:
        with capture_sql(database.engine) as lazy:
            lazy_response = await client.get("/lazy/authors", params={"limit": 7})
        with capture_sql(database.engine) as eager:
            eager_response = await client.get("/selectin/authors", params={"limit": 7})
    assert len(lazy) == 1 + 7
    assert len(eager) == 2
    assert lazy_response.json() == eager_response.json()
    assert [author["id"] for author in lazy_response.json()] == list(range(1, 8))
    assert_nothing_held(database)


THREADS, POOL = 4, 2


@pytest.fixture
def small_pool(db_url: URL) -> Iterator[SyncDatabase]:
    """A pool of 2 that gives up after half a second, and 10 ms per statement."""
    database = SyncDatabase.create(
        db_url, EngineOptions(latency_ms=10, pool_size=POOL, max_overflow=0, pool_timeout=0.5)
    )
    create_and_seed(database.engine)
    yield database
    database.dispose()


@pytest.mark.parametrize(
    ("path", "clients", "fails"),
    [
        ("/threadpool/users/{id}", THREADS + POOL - 1, False),  # one short of stuck: never
        pytest.param(  # every connection held, waiting: requests wait out the pool timeout
            "/threadpool/users/{id}", THREADS + POOL + 2, True, marks=pytest.mark.slow
        ),
        ("/released/users/{id}", 3 * (THREADS + POOL), False),  # nothing held while waiting
    ],
)
async def test_def_route_deadlocks_from_threads_plus_pool_clients_unless_it_releases_first(
    small_pool, path: str, clients: int, fails: bool
) -> None:
    app = connection_release_app(small_pool, threads=THREADS)
    with collect_log("labkit.shop.errors") as complaints:
        async with lab_client(app) as client:
            result = await run_load(client, path, requests=30, concurrency=clients)
    assert (result.failed > 0) is fails
    assert set(result.statuses) == ({200, 503} if fails else {200})
    assert {r.getMessage() for r in complaints} == (
        {"no pooled connection: TimeoutError"} if fails else set()
    )
    assert_nothing_held(small_pool)
