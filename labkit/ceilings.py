"""Ceilings: how fast the pieces under a request go on their own, to compare the setups with.

A setup's requests per second cannot beat the cost of its parts: the driver's lookup, a new
`Session` (or `AsyncSession`) per request, and the harness itself (``/health``, measured by the
load driver). Each function here repeats one part for a fixed time on the lab's database and
returns how many it did per second.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from .database import AsyncDatabase, SyncDatabase
from .models import User
from .seed import seed_users


def _per_second(step: Callable[[int], object], seconds: float) -> float:
    step(0)  # the first call pays for caches and the first connection
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            step(done)
            done += 1
    return done / elapsed


def _user_id(i: int) -> int:
    return i % len(seed_users()) + 1


def raw_sqlite_lookups(path: str, seconds: float = 0.2) -> float:
    """``SELECT ... WHERE id = ?`` on one sqlite3 connection: the driver, without SQLAlchemy."""
    query = select(User.id, User.name, User.email).where(User.id == 1)
    sql = str(query.compile(dialect=sqlite.dialect()))  # "... WHERE users.id = ?"
    connection = sqlite3.connect(path)
    try:
        cursor = connection.cursor()
        return _per_second(lambda i: cursor.execute(sql, (_user_id(i),)).fetchall(), seconds)
    finally:
        connection.close()


def session_gets(database: SyncDatabase, seconds: float = 0.2) -> float:
    """A new `Session`, one ``get``, closed: what each sync request does, minus the web."""

    def step(i: int) -> None:
        with database.SessionLocal() as session:
            session.get(User, _user_id(i))

    return _per_second(step, seconds)


async def async_session_gets(database: AsyncDatabase, seconds: float = 0.2) -> float:
    """A new `AsyncSession`, one awaited ``get``, closed: what each async request does."""

    async def step(i: int) -> None:
        async with database.AsyncSessionLocal() as session:
            await session.get(User, _user_id(i))

    return await _async_per_second(step, seconds)


async def _async_per_second(step: Callable[[int], Awaitable[None]], seconds: float) -> float:
    await step(0)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            await step(done)
            done += 1
    return done / elapsed
