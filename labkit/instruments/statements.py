"""Which thread ran each statement: whether a route's database calls held the event loop.

A statement of a sync driver on the event loop's thread held the loop for as long as the
database took (a sync `Session` in an ``async def`` route). `watch_statement_threads` tells those
apart from an async driver's statements and from statements on worker threads, for every engine
in the process, and notes the pools that served them (`pool_capacity`): what ``python -m labkit
probe`` needs to say what holds an app it never saw back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import Pool, QueuePool

from labkit.instruments.events import listening


def pool_capacity(pool: Pool) -> int | None:
    """The most connections `pool` lends at once, None when it sets no limit.

    A `QueuePool` (SQLAlchemy's default, and the async engines' adapted one) lends
    ``pool_size + max_overflow``; ``max_overflow=-1``, `NullPool`, `StaticPool` and
    `SingletonThreadPool` never make a caller wait for a connection.
    """
    if not isinstance(pool, QueuePool):
        return None
    overflow: int = pool._max_overflow  # no public accessor; set from create_engine(max_overflow=)
    return None if overflow < 0 else pool.size() + overflow


@dataclass
class StatementThreads:
    """Where a block's statements ran, and through which pools.

    A statement of a sync driver on the event loop's thread held the loop for as long as the
    database took (a sync `Session` in an ``async def`` route): `loop_held_s` adds those
    times up. An async driver's statements also pass SQLAlchemy's events on the loop's thread,
    inside a greenlet, but the driver awaits its answer and the loop runs on: those do not hold
    it. Statements on other threads (AnyIO's workers, for ``def`` routes and sync dependencies)
    hold a thread, not the loop.
    """

    loop_thread: int
    on_loop_sync: int = 0
    on_loop_async: int = 0
    elsewhere: int = 0
    loop_held_s: float = 0.0
    pools: dict[int, Pool] = field(default_factory=dict)
    """The pools of the engines that ran them, by id: what `pool_capacity` reads."""

    @property
    def statements(self) -> int:
        return self.on_loop_sync + self.on_loop_async + self.elsewhere

    @property
    def held_loop(self) -> bool:
        """True when any statement ran through a sync driver on the event loop's thread."""
        return self.on_loop_sync > 0

    def take(self) -> StatementThreads:
        """What was seen so far, as a copy; the counts start again from zero."""
        taken = replace(self, pools=dict(self.pools))
        self.on_loop_sync = self.on_loop_async = self.elsewhere = 0
        self.loop_held_s = 0.0
        self.pools.clear()
        return taken


@contextmanager
def watch_statement_threads(loop_thread: int | None = None) -> Iterator[StatementThreads]:
    """Note, for every statement on any engine in the block, its thread and its driver's kind.

    `loop_thread`: ``threading.get_ident()`` of the event loop's thread; by default the
    caller's, which is right when called from a coroutine on that loop. SQLAlchemy runs
    class-level listeners in the order they were added, so enter this before
    `latency_everywhere`: the clock then starts before the simulated wait, as it would before a
    network round trip. `StatementThreads.take` splits one watch into runs.
    """
    seen = StatementThreads(threading.get_ident() if loop_thread is None else loop_thread)
    lock = threading.Lock()
    # A sync statement on the loop's thread runs from start to end without letting anything
    # else run there, so one clock serves them all.
    started = 0.0

    def before(conn: Any, *_args: Any) -> None:
        nonlocal started
        on_loop = threading.get_ident() == seen.loop_thread
        with lock:
            if not on_loop:
                seen.elsewhere += 1
            elif conn.dialect.is_async:
                seen.on_loop_async += 1
            else:
                seen.on_loop_sync += 1
                started = time.perf_counter()
            pool = conn.engine.pool
            seen.pools.setdefault(id(pool), pool)

    def after(conn: Any, *_args: Any) -> None:
        if threading.get_ident() == seen.loop_thread and not conn.dialect.is_async:
            with lock:
                seen.loop_held_s += time.perf_counter() - started

    with listening(
        [(Engine, "before_cursor_execute", before), (Engine, "after_cursor_execute", after)]
    ):
        yield seen
