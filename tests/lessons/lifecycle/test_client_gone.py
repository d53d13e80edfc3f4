"""The client goes away mid-request: what the route, the session dependency and the pool see, and
the one case that leaks, with its fix."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from labkit.app.databases import SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.lessons.lifecycle.client_gone import Abandonment, abandon_each, in_words
from labkit.lessons.lifecycle.client_gone_app import Notes, exception_name

SQLITE = make_url("sqlite:///unused.db")
SIZES = {"requests": 12, "at_once": 6, "latency_ms": 30.0, "time_limit_s": 0.045}
ATTEMPTS = 3
"""Runs that may look for a leak that is a race (see the asyncio-way test)."""


def seeded(url: URL) -> URL:
    database = SyncDatabase.create(url)
    create_and_seed(database.engine)
    database.dispose()
    return url


def test_only_the_async_route_has_a_time_limit_of_its_own() -> None:
    with pytest.raises(ValueError, match="only the async def route"):
        Abandonment("def", SQLITE, "route")


def test_a_def_route_cancelled_the_asyncio_way_is_refused_on_sqlite() -> None:
    """It would close a session in one thread while another uses its sqlite3 connection."""
    with pytest.raises(ValueError, match="not on SQLite"):
        Abandonment("def", SQLITE, "middleware, asyncio")
    Abandonment("def", SQLITE, "middleware, anyio")  # waits for the thread: allowed


@pytest.mark.anyio
async def test_a_time_limit_that_would_strike_no_statement_is_refused() -> None:
    with pytest.raises(ValueError, match="between one statement's wait and two"):
        await abandon_each([], requests=1, at_once=1, latency_ms=30.0, time_limit_s=0.1)


def test_a_pool_timeout_is_not_mistaken_for_the_built_in_one() -> None:
    assert exception_name(TimeoutError()) == "TimeoutError"
    assert exception_name(PoolTimeoutError()) == "sqlalchemy.exc.TimeoutError"
    assert exception_name(ValueError()) == "ValueError"


def test_notes_say_what_reached_the_route_and_the_yield() -> None:
    notes = Notes()
    with notes.route_sync(1):
        pass
    with pytest.raises(KeyError), notes.route_sync(2):
        raise KeyError
    with pytest.raises(RuntimeError), notes.exit_sync():
        raise RuntimeError
    assert notes.route == {"returned": 1, "KeyError": 1}
    assert notes.exit == {"RuntimeError": 1}
    assert set(notes.ended) == {1, 2}
    assert in_words(Counter({"a": 1, "b": 3})) == "3 b, 1 a"


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_client_that_leaves_leaks_nothing(tmp_path) -> None:
    url = seeded(make_url(f"sqlite:///{tmp_path / 'gone.db'}"))
    results = await abandon_each([Abandonment("def", url), Abandonment("async def", url)], **SIZES)
    for result in results:
        assert result.client_left_in_time
        assert result.answers == {"left": 12}
        assert result.notes.route == result.notes.exit == {"returned": 12}
        assert result.fates.returned == 12 and not result.fates.invalidated
        assert result.checked_out == 0 and result.sessions_open == 0 and not result.log


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_time_limit_inside_a_statement_invalidates_the_connection(tmp_path) -> None:
    url = seeded(make_url(f"sqlite:///{tmp_path / 'limit.db'}"))
    (result,) = await abandon_each([Abandonment("async def", url, "route")], **SIZES)
    assert result.answers == {"504": 12}
    assert result.notes.route == {"CancelledError": 12}
    assert result.fates.invalidated == {"CancelledError": 12} and result.fates.returned == 0
    assert result.checked_out == 0 and result.sessions_open == 0 and not result.log


@pytest.mark.anyio
async def test_cancelling_a_def_route_the_asyncio_way_leaks_and_the_anyio_way_does_not(
    postgres_url: URL,
) -> None:
    url = seeded(postgres_url)
    setups = [
        Abandonment("def", url, "middleware, asyncio"),
        Abandonment("def", url, "middleware, anyio"),
    ]
    # The leak is a race between the route's thread and the session's close. Runs of 6 requests
    # at once missed it in 6 to 8 of 10 runs here, runs of 12 at once in none of 8; so the test
    # sends 12 at once, and up to ATTEMPTS runs may look for it. The AnyIO way must leave nothing
    # in every run.
    racing = {**SIZES, "requests": 24, "at_once": 12}
    leaks = []
    for _attempt in range(ATTEMPTS):
        leaking, waited = await abandon_each(setups, **racing)
        assert leaking.checked_out_after_gc == 0  # the cycle collector gives them back
        assert waited.checked_out == 0 and waited.sessions_open == 0 and not waited.log
        assert waited.answered_while_route_ran == 0 and waited.backends_after_dispose == 0
        leaks.append((leaking.checked_out, leaking.notes.began_again))
        if leaking.checked_out > 0 and leaking.notes.began_again > 0:
            break
    else:
        raise AssertionError(f"no run leaked: (checked out, began again) per run: {leaks}")
