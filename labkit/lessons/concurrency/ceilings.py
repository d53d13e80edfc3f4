"""Ceilings: how fast the pieces under a request go on their own, to compare the setups with.

A setup's requests per second cannot beat the cost of its parts: the driver's lookup, a new
`Session` (or `AsyncSession`) per request, and the harness itself (``/health``, measured by the
load driver). Each function here repeats one part for a fixed time on the lab's database and
returns how many it did per second.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.app.seed import seed_users
from labkit.shop.models import User

BATCH = 100
"""Lookups per timed batch: the clock is read once per batch, not once per lookup."""


def _user_ids() -> list[int]:
    """The ids a batch looks up in turn: every seed user, so every lookup finds its row."""
    return [int(row["id"]) for row in seed_users()][:BATCH]


def _per_second(batch: Callable[[], object], seconds: float) -> float:
    batch()  # the first batch pays for caches and the first connection
    batches, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        batch()
        batches += 1
    return batches * BATCH / elapsed


def raw_sqlite_lookups(path: str, seconds: float = 0.2) -> float:
    """``SELECT ... WHERE id = ?`` on one sqlite3 connection: the driver, without SQLAlchemy."""
    query = select(User.id, User.name, User.email).where(User.id == 1)
    sql = str(query.compile(dialect=sqlite.dialect()))  # "... WHERE users.id = ?"
    parameters = [(user_id,) for user_id in _user_ids()]
    connection = sqlite3.connect(path)
    try:
        execute = connection.cursor().execute

        def batch() -> None:
            for params in parameters:
                execute(sql, params).fetchall()

        return _per_second(batch, seconds)
    finally:
        connection.close()


def session_gets(database: SyncDatabase, seconds: float = 0.2) -> float:
    """A new `Session`, one ``get``, closed: what each sync request does, minus the web."""
    ids = _user_ids()

    def batch() -> None:
        for user_id in ids:
            with database.SessionLocal() as session:
                session.get(User, user_id)

    return _per_second(batch, seconds)


async def async_session_gets(database: AsyncDatabase, seconds: float = 0.2) -> float:
    """A new `AsyncSession`, one awaited ``get``, closed: what each async request does."""
    ids = _user_ids()

    async def batch() -> None:
        for user_id in ids:
            async with database.AsyncSessionLocal() as session:
                await session.get(User, user_id)

    await batch()
    batches, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        await batch()
        batches += 1
    return batches * BATCH / elapsed


async def connection_costs(database: AsyncDatabase, repeats: int = 10) -> dict[str, float]:
    """Seconds to get a connection and run ``SELECT 1``: from the pool, or newly opened.

    A new connection is what an overflow connection costs each time it is reopened; emptying
    the pool (`dispose`) before each try forces one. Each is the fastest of `repeats` tries:
    a try lasts a millisecond or so, and other programs on the machine can only make one slower.
    """

    async def one() -> None:
        async with database.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def timed(fresh: bool) -> float:
        fastest = float("inf")
        for _ in range(repeats):
            if fresh:
                await database.engine.dispose()
            start = time.perf_counter()
            await one()
            fastest = min(fastest, time.perf_counter() - start)
        return fastest

    await one()
    return {"pooled": await timed(fresh=False), "new": await timed(fresh=True)}
