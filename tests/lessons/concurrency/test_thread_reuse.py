"""A kernel's extra ``s``: AnyIO starts a worker thread per request where no task is the root.

A Jupyter kernel runs its event loop with ``run_forever`` and each cell as a task of its own;
`like_a_kernel` runs a coroutine the same way, so these tests need no kernel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import URL

from labkit.app.create import create_app
from labkit.lessons.concurrency.thread_reuse import thread_reuse, worker_threads_used

T = TypeVar("T")


def like_a_kernel(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` as a kernel runs a cell: a task on a loop that runs forever, until stopped."""
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(coro)
        task.add_done_callback(lambda _: loop.stop())
        loop.run_forever()
        return task.result()
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_under_asyncio_run_one_worker_thread_serves_every_task() -> None:
    found = asyncio.run(thread_reuse(20))
    assert found["bare"].threads_per_task == pytest.approx(1 / 20)
    assert found["grouped"].threads_per_task == pytest.approx(1 / 20)


def test_on_a_kernels_loop_every_bare_task_starts_a_worker_thread_and_a_group_does_not() -> None:
    found = like_a_kernel(thread_reuse(20))
    assert found["bare"].threads_per_task == pytest.approx(1.0)
    assert found["grouped"].threads_per_task == pytest.approx(1 / 20)


def test_on_a_kernels_loop_the_lab_app_reuses_its_worker_threads(db_url: URL) -> None:
    """Its requests run in the lifespan's task group, so a `def` route's thread is reused.

    Before that, requests ran in bare tasks: each started a worker thread of its own, which
    added a fraction of a millisecond to the sync setups' ``s`` in a kernel.
    """
    threads = like_a_kernel(worker_threads_used(create_app(db_url), requests=30))
    assert threads <= 2, f"30 requests ran on {threads} worker threads"
