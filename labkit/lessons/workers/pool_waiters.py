"""Who wakes a request that waits for a pooled connection: a connection coming back, and only that.

SQLAlchemy's `QueuePool` (and `AsyncAdaptedQueuePool`, an async app's pool) lets
``pool_size + max_overflow`` connections exist at once. A checkout that finds them all taken
waits on the pool's queue, up to ``pool_timeout`` (``QueuePool._do_get``). A connection being
opened takes one of those places too. When the server refuses it, ``_do_get`` gives the place
back (``_dec_overflow``), but that only lowers a counter: nothing is put on the queue, so no
waiter wakes (``util.queue``: a getter is woken by ``put``). The place goes to whichever
request asks next, and the waiter sleeps on until a connection is returned, or until
``pool_timeout`` ends its wait with `sqlalchemy.exc.TimeoutError`.

`waiter_after` shows it in this process, on the real pool class with a stand-in for the
driver's connection: one checkout opens a connection that takes `connect_s`, a second checkout
waits for it, and a third arrives after the first has finished.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_, greenlet_spawn


class _StandInConnection:
    """What the pool needs of a driver's connection: ``rollback`` on return, ``close``."""

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class WaiterRun:
    """One run of `waiter_after`; times in seconds from its start."""

    first: str
    """How the first checkout's connection ended: ``"refused"`` or ``"returned"``."""
    pool_timeout_s: float
    place_free_s: float
    """When the first checkout's place in the pool came free: its connect failed, or its
    connection came back."""
    waiter_started_s: float
    waiter_done_s: float
    waiter_got: str
    """``"a connection"``, or the error that ended its wait (``"TimeoutError"``)."""
    latecomer_got_s: float | None
    """When a checkout that began after the place came free got a connection (None: no
    latecomer in this run)."""

    @property
    def waited_s(self) -> float:
        return self.waiter_done_s - self.waiter_started_s

    @property
    def asleep_while_free_s(self) -> float:
        """How long the waiter went on waiting after a place had come free."""
        return self.waiter_done_s - self.place_free_s


async def waiter_after(
    first: Literal["refused", "returned"],
    *,
    pool_timeout_s: float = 0.5,
    connect_s: float = 0.05,
) -> WaiterRun:
    """A pool of one connection (``pool_size=1, max_overflow=0``). The first checkout's
    connect takes `connect_s`; with ``"refused"`` it then fails, as a server at its limit
    refuses, and a latecomer asks once it has; with ``"returned"`` it succeeds and the
    connection goes straight back. A second checkout waits meanwhile."""
    if first not in ("refused", "returned"):
        raise ValueError(f"first must be 'refused' or 'returned', not {first!r}")
    started = time.monotonic()
    connecting, place_free, waiter_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    times: dict[str, float] = {}
    attempts = 0

    def now() -> float:
        return time.monotonic() - started

    def creator() -> DBAPIConnection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            connecting.set()
            await_(asyncio.sleep(connect_s))
            if first == "refused":
                times["place_free"] = now()
                place_free.set()
                raise ConnectionRefusedError("the server refused the connection")
        # SQLAlchemy types a creator's connection as a whole DBAPI one (cursor(), commit(), any
        # attribute); the pool itself, with no dialect, calls only what the stand-in has.
        return cast(DBAPIConnection, _StandInConnection())

    pool = AsyncAdaptedQueuePool(creator, pool_size=1, max_overflow=0, timeout=pool_timeout_s)

    async def first_checkout() -> None:
        try:
            connection = await greenlet_spawn(pool.connect)
        except ConnectionRefusedError:
            return
        times["place_free"] = now()
        place_free.set()
        await greenlet_spawn(connection.close)  # back to the pool

    async def waiter() -> str:
        await connecting.wait()
        times["waiter_started"] = now()
        try:
            connection = await greenlet_spawn(pool.connect)
        except PoolTimeoutError as exc:
            return type(exc).__name__
        finally:
            times["waiter_done"] = now()
            waiter_done.set()
        await greenlet_spawn(connection.close)
        return "a connection"

    async def latecomer() -> None:
        await place_free.wait()
        connection = await greenlet_spawn(pool.connect)
        times["latecomer_got"] = now()
        await waiter_done.wait()  # hold it: its return would wake the waiter
        await greenlet_spawn(connection.close)

    if first == "refused":
        _, waiter_got, _ = await asyncio.gather(first_checkout(), waiter(), latecomer())
    else:
        _, waiter_got = await asyncio.gather(first_checkout(), waiter())
    await greenlet_spawn(pool.dispose)
    return WaiterRun(
        first,
        pool_timeout_s,
        times["place_free"],
        times["waiter_started"],
        times["waiter_done"],
        waiter_got,
        times.get("latecomer_got"),
    )
