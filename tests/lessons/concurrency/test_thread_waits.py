"""A sync dependency's exit never waits for AnyIO's threads; its setup and a `def` route's
answer validation do (FastAPI's `contextmanager_in_threadpool` gives each exit a limiter of its
own)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from labkit.lessons.concurrency.thread_waits import thread_waits

pytestmark = pytest.mark.anyio


async def test_the_dependency_exit_runs_while_the_only_thread_is_taken(db_url: URL) -> None:
    waits = await thread_waits(db_url, hold_s=0.3)
    assert waits.def_query_done < waits.taken  # the def route had returned
    assert waits.taken < waits.loop_route_exit < waits.loop_route_answered < waits.freed


async def test_setup_and_validation_wait_for_the_thread(db_url: URL) -> None:
    waits = await thread_waits(db_url, hold_s=0.3)
    assert waits.later_setup > waits.freed
    assert waits.def_answered > waits.freed
