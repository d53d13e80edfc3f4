"""Who wakes a request waiting for a pooled connection: a connection coming back, and only that
(labkit.lessons.workers.pool_waiters, on SQLAlchemy's own `AsyncAdaptedQueuePool`)."""

from __future__ import annotations

import pytest

from labkit.lessons.workers.pool_waiters import waiter_after

pytestmark = pytest.mark.anyio

TIMEOUT_S = 0.3


async def test_a_refused_connection_frees_a_place_but_wakes_no_waiter() -> None:
    """The waiter sleeps to ``pool_timeout`` and fails, while a request that asked after the
    refusal gets a connection at once."""
    run = await waiter_after("refused", pool_timeout_s=TIMEOUT_S, connect_s=0.05)
    assert run.waiter_got == "TimeoutError"
    assert run.waited_s >= 0.95 * TIMEOUT_S
    assert run.latecomer_got_s is not None
    assert run.place_free_s <= run.latecomer_got_s < run.waiter_done_s
    assert run.asleep_while_free_s >= 0.5 * TIMEOUT_S


async def test_a_connection_given_back_wakes_the_waiter() -> None:
    run = await waiter_after("returned", pool_timeout_s=TIMEOUT_S, connect_s=0.05)
    assert run.waiter_got == "a connection"
    assert run.waiter_done_s - run.place_free_s < TIMEOUT_S / 2
    assert run.latecomer_got_s is None


async def test_waiter_after_takes_only_refused_or_returned() -> None:
    with pytest.raises(ValueError, match="'refused' or 'returned'"):
        await waiter_after("dropped")  # type: ignore[arg-type]
