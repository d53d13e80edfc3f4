"""The stall watch: where the blocking setup's connections are while its loop waits in the pool,
and on which threads a sync session dependency opens and closes its session."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from labkit.app.databases import EngineOptions
from labkit.lessons.concurrency.pool_stalls import stall_run

pytestmark = pytest.mark.anyio


async def test_blocking_get_db_opens_and_closes_its_sessions_on_worker_threads(db_url: URL) -> None:
    run = await stall_run(db_url, "blocking", clients=2, requests=10, options=EngineOptions())
    assert run.result.ok == 10 and not run.stalls
    assert run.opened_off_loop == run.closed_off_loop == 10
    assert run.result.peak_threads >= 1


async def test_the_async_setup_never_opens_a_sync_session(db_url: URL) -> None:
    run = await stall_run(db_url, "async", clients=4, requests=10, options=EngineOptions())
    assert run.result.ok == 10 and run.requests == [] and run.result.peak_threads == 0


@pytest.mark.slow  # waits out pool timeouts
async def test_a_blocking_stall_is_the_loop_waiting_for_answered_requests_connections(
    db_url: URL,
) -> None:
    options = EngineOptions(pool_size=2, max_overflow=0, pool_timeout=0.2)
    run = await stall_run(db_url, "blocking", clients=4, requests=40, options=options)
    assert run.result.failed == len(run.stalls) > 0
    for stall in run.stalls:
        assert stall.loop_waits and stall.threads_wait == 0
        assert (stall.holders, stall.holders_answered, stall.holders_closing) == (2, 2, 0)
