"""The probes measure what they claim: loop lag, engine activity, threads, /health, slow steps."""

from __future__ import annotations

import asyncio
import logging
import time

import anyio.to_thread
import pytest
from sqlalchemy import text

from labkit.app.client import lab_client
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.bench.setups import SETUPS
from labkit.instruments.watch import (
    LagProbe,
    ThreadGauge,
    catch_slow_callbacks,
    collect_log,
    poll_health,
    watch_engine,
    while_waiting,
)

pytestmark = pytest.mark.anyio


async def test_lag_probe_records_how_long_the_loop_was_held() -> None:
    async with LagProbe(0.001) as trace:
        await asyncio.sleep(0.02)  # a free loop: the probe wakes on time
        time.sleep(0.05)  # the loop is held: the next wake-up is about 50 ms late
        await asyncio.sleep(0.01)
    assert len(trace.times_s) == len(trace.lags_s) > 5
    # The hold is a wake-up about 50 ms late, once it was over (after 20 ms free and 50 held).
    # Another program on the machine can only make wake-ups later, never earlier.
    lateness = list(zip(trace.times_s, trace.lags_s, strict=True))
    assert any(lag >= 0.045 and woke_s >= 0.065 for woke_s, lag in lateness)
    # And it is counted once: wake-ups follow one another, so the waits asked for and the
    # lateness, summed, fit in the time the probe ran. (A probe that measured each wake-up from
    # a fixed schedule would count the hold again at every wake-up that caught up after it.)
    asked_s = len(trace.lags_s) * trace.interval_s
    assert asked_s + sum(trace.lags_s) <= trace.times_s[-1] + 0.001


async def test_lag_probe_does_not_swallow_its_callers_cancellation() -> None:
    async def probed() -> None:
        async with LagProbe(0.001):
            await asyncio.sleep(10)

    task = asyncio.create_task(probed())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_watch_engine_counts_statements_checkouts_and_overflow_churn(db_url) -> None:
    database = SyncDatabase.create(db_url, EngineOptions(pool_size=1, max_overflow=1))
    create_and_seed(database.engine)
    with watch_engine(database.engine) as counts:
        with database.engine.connect() as first, database.engine.connect() as second:
            first.execute(text("SELECT 1"))
            second.execute(text("SELECT 2"))
        with database.engine.connect() as third:
            third.execute(text("SELECT 3"))
    database.dispose()
    assert counts.statements == 3
    assert counts.peak_checked_out == 2
    assert counts.checkouts == 3 and 0 < counts.mean_hold_s < 1
    # The pool kept the connection that seeding used; the second checkout opened an overflow
    # connection, closed when it came back (the pool holds 1); the third reused the kept one.
    assert (counts.opened, counts.closed) == (1, 1)


async def test_thread_gauge_sees_the_busy_worker_threads() -> None:
    gauge = ThreadGauge()
    assert gauge.limit == anyio.to_thread.current_default_thread_limiter().total_tokens
    async with LagProbe(0.001, on_wake=gauge.sample):
        await asyncio.gather(*(anyio.to_thread.run_sync(time.sleep, 0.05) for _ in range(3)))
    assert gauge.peak == 3


async def test_thread_option_sets_the_limiter_while_the_app_runs(make_app) -> None:
    limiter = anyio.to_thread.current_default_thread_limiter()
    before = limiter.total_tokens
    async with lab_client(make_app(threads=7)) as client:
        assert limiter.total_tokens == 7
        assert (await client.get("/threadpool/users/1")).status_code == 200
    assert limiter.total_tokens == before


async def test_poll_health_times_each_check_from_when_it_was_due(make_app) -> None:
    async with lab_client(make_app(latency_ms=60)) as client:
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(client, 0.005, stop))
        await asyncio.sleep(0.03)
        (await client.get("/blocking/users/1")).raise_for_status()  # holds the loop 60 ms
        await asyncio.sleep(0.03)
        stop.set()
        waits = await poller
    assert len(waits) >= 3
    assert max(waits) >= 0.03  # the check that fell due during the block waited for it
    assert min(waits) < 0.01


async def test_debug_mode_names_the_step_that_held_the_loop() -> None:
    async def stalls() -> None:
        await asyncio.sleep(0)
        time.sleep(0.05)

    loop = asyncio.get_running_loop()
    was_debug = loop.get_debug()
    with catch_slow_callbacks(0.02) as slow:
        await asyncio.create_task(stalls())
        await asyncio.sleep(0.01)
    assert loop.get_debug() == was_debug
    assert [s.where for s in slow] == [
        "test_debug_mode_names_the_step_that_held_the_loop.<locals>.stalls"
    ]
    assert slow[0].seconds >= 0.045


def test_collect_log_keeps_records_off_stderr(capsys) -> None:
    with collect_log("labkit.test") as records:
        logging.getLogger("labkit.test").warning("pool is full: %s", "TimeoutError")
    assert [r.getMessage() for r in records] == ["pool is full: TimeoutError"]
    assert capsys.readouterr().err == ""
    assert logging.getLogger("labkit.test").propagate


@pytest.mark.slow  # a seeded app, and a 200 ms wait per setup
async def test_while_waiting_names_what_each_setup_holds_in_its_wait(make_app) -> None:
    """The table of notebook 00: a pooled connection each, and the loop, a worker thread, or
    (on aiosqlite) the connection's own thread where the wait runs; asyncpg's in no thread."""
    app = make_app(latency_ms=200)
    engines = [app.sync_db.engine, app.async_db.engine]
    async with lab_client(app) as client:
        held = [
            await while_waiting(client, f"/{setup}/users/1", engines, at_s=0.1) for setup in SETUPS
        ]
    on_aiosqlite = app.async_db.engine.url.get_driver_name() == "aiosqlite"
    assert [seen.checked_out for seen in held] == [1, 1, 1]
    assert [seen.worker_threads for seen in held] == [0, 1, 0]
    assert [seen.waiting_in for seen in held] == [
        ("event loop",),
        ("AnyIO worker",),
        ("aiosqlite connection",) if on_aiosqlite else (),
    ]
    blocking, threadpool, in_async = (seen.health.health_s for seen in held)
    assert blocking > 0.05 > max(threadpool, in_async)
