"""The three setups behave identically to a client, and every request gives its session back."""

from __future__ import annotations

import time

import pytest
from support import assert_nothing_held

from labkit.app.client import lab_client
from labkit.bench.setups import SETUPS
from labkit.instruments.watch import health_during
from labkit.settings import async_url, database_url

pytestmark = pytest.mark.anyio


async def test_found_user_is_the_same_json_from_every_setup(app_client) -> None:
    app, client = app_client
    bodies = [(await client.get(f"/{setup}/users/7")) for setup in SETUPS]
    assert [r.status_code for r in bodies] == [200, 200, 200]
    assert bodies[0].json() == {
        "id": 7,
        "name": bodies[0].json()["name"],
        "email": "user0007@example.com",
    }
    assert bodies[0].content == bodies[1].content == bodies[2].content
    assert_nothing_held(app)


async def test_lookup_by_email_returns_the_first_match_from_every_setup(app_client) -> None:
    app, client = app_client
    responses = [
        await client.get(f"/{s}/users", params={"email": "user0042@example.com"}) for s in SETUPS
    ]
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["id"] for r in responses} == {42}
    missing = [
        await client.get(f"/{s}/users", params={"email": "nobody@example.com"}) for s in SETUPS
    ]
    assert {r.status_code for r in missing} == {404}
    assert_nothing_held(app)


@pytest.mark.parametrize("setup", SETUPS)
async def test_missing_user_is_404_with_a_reason(app_client, setup: str) -> None:
    app, client = app_client
    response = await client.get(f"/{setup}/users/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "no user with id 999999"}
    assert_nothing_held(app)


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("bad_id", ["abc", "1.5", "0", "-3", str(2**31)])
async def test_id_that_is_not_a_valid_integer_is_422(app_client, setup: str, bad_id: str) -> None:
    app, client = app_client
    response = await client.get(f"/{setup}/users/{bad_id}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "user_id"]
    assert_nothing_held(app)


@pytest.mark.parametrize("setup", SETUPS)
async def test_new_user_is_201_and_duplicate_email_is_409_rolled_back(
    app_client, setup: str
) -> None:
    app, client = app_client
    new = {"name": "Edgar Codd", "email": f"codd.{setup}@example.com"}
    created = await client.post(f"/{setup}/users", json=new)
    assert created.status_code == 201
    assert created.json()["email"] == new["email"]
    assert created.json()["id"] > 1000

    duplicate = await client.post(
        f"/{setup}/users", json={"name": "Someone Else", "email": new["email"]}
    )
    assert duplicate.status_code == 409
    assert "exists" in duplicate.json()["detail"]
    assert_nothing_held(app)

    # The failed insert was rolled back: the first user is intact and the next write works.
    again = await client.get(f"/{setup}/users/{created.json()['id']}")
    assert again.json() == created.json()
    other = await client.post(
        f"/{setup}/users", json={"name": "Next", "email": f"next.{setup}@example.com"}
    )
    assert other.status_code == 201
    assert other.json()["id"] > created.json()["id"]


async def test_two_requests_get_two_distinct_sessions(app_client, caplog) -> None:
    app, client = app_client
    caplog.set_level("INFO", logger="labkit.sessions")
    for setup in SETUPS:
        caplog.clear()
        await client.get(f"/{setup}/users/1")
        await client.get(f"/{setup}/users/2")
        events = [r.getMessage().split() for r in caplog.records]  # "sync session 1 opened"
        assert {words[0] for words in events} == {"async" if setup == "async" else "sync"}
        numbers = [int(words[2]) for words in events]
        assert [words[3] for words in events] == ["opened", "closed", "opened", "closed"]
        assert numbers[0] == numbers[1] != numbers[2] == numbers[3]
    assert app.sync_db.ledger.opened == 4
    assert app.async_db.ledger.opened == 2
    assert_nothing_held(app)


@pytest.mark.parametrize("setup", SETUPS)
async def test_simulated_latency_makes_a_request_wait_at_least_that_long(
    make_app, setup: str
) -> None:
    async with lab_client(make_app(latency_ms=20)) as client:
        start = time.perf_counter()
        response = await client.get(f"/{setup}/users/3")
        elapsed = time.perf_counter() - start
    assert response.status_code == 200
    assert elapsed >= 0.020


@pytest.mark.slow
async def test_blocking_setup_holds_up_health_and_the_others_do_not(make_app) -> None:
    async with lab_client(make_app(latency_ms=200)) as client:
        await client.get("/threadpool/users/1")  # open the pools' first connections
        await client.get("/async/users/1")
        waits = {setup: await health_during(client, f"/{setup}/users/2") for setup in SETUPS}
    # Blocking: /health cannot start until the query's 200 ms are over.
    assert waits["blocking"].slow_s > 0.2
    assert waits["blocking"].held_up > 0.5
    for setup in ("threadpool", "async"):
        assert waits[setup].held_up < 0.25, (setup, waits[setup])


@pytest.mark.parametrize(
    ("given", "sync_driver", "async_driver"),
    [
        ("sqlite:///data/x.db", "sqlite", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///data/x.db", "sqlite", "sqlite+aiosqlite"),
        ("postgresql://lab@db/lab", "postgresql+psycopg", "postgresql+asyncpg"),
        ("postgresql+asyncpg://lab@db/lab", "postgresql+psycopg", "postgresql+asyncpg"),
        ("postgresql+psycopg_async://lab@db/lab", "postgresql+psycopg", "postgresql+psycopg_async"),
    ],
)
def test_one_url_gives_both_setups_their_driver(
    given: str, sync_driver: str, async_driver: str
) -> None:
    assert database_url(given).drivername == sync_driver
    assert async_url(given).drivername == async_driver
    assert async_url(given).database == database_url(given).database
