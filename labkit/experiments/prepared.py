"""Prepared statements through PgBouncer's transaction pooling: how many requests fail.

A prepared statement lives on the server connection that prepared it. Behind transaction
pooling, a client's next transaction may run on another server connection, where that
statement does not exist, or where another client already prepared one of the same name.
`requests_through` runs requests the way an app's routes do (one `AsyncSession` each, one of
four queries, then a commit) from many tasks over a small pool, and counts what fails.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from ..shop.models import Post, User


@dataclass
class PreparedRun:
    """How many of the requests failed, by the driver's error, and the first error's text."""

    requests: int
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception inside SQLAlchemy's wrappers (and its async adaptors')."""
    found = getattr(exc, "orig", None) or exc
    if type(found).__module__.startswith("sqlalchemy.") and found.__cause__ is not None:
        found = found.__cause__
    return found


async def _request(session: AsyncSession, i: int, commit: bool) -> None:
    """One of four queries, as four routes would send them."""
    kind = i % 4
    if kind == 0:
        await session.get(User, i % 50 + 1)
    elif kind == 1:
        await session.scalar(select(User).where(User.email == f"user{i}@example.com"))
    elif kind == 2:
        await session.scalars(select(Post).where(Post.author_id == i % 50 + 1))
    else:
        await session.scalar(select(func.count()).select_from(Post).where(Post.author_id == i))
    if commit:
        await session.commit()


async def requests_through(
    url: URL,
    *,
    connect_args: dict[str, Any] | None = None,
    requests: int = 200,
    pool_size: int = 5,
    commit: bool = True,
) -> PreparedRun:
    """`requests` concurrent requests on an async engine for `url` (a pool of `pool_size`, so
    each connection serves many), each in its own session; what failed, and how.

    With ``commit=False`` each request ends as a read-only request does in the lab's app: its
    session closes, which rolls the transaction back.
    """
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=0, connect_args=connect_args or {}
    )
    run = PreparedRun(requests)

    async def one(i: int) -> None:
        try:
            async with AsyncSession(engine) as session:
                await _request(session, i, commit)
        except Exception as exc:  # the driver's errors, whatever their class
            run.errors[type(driver_error(exc)).__name__] += 1
            run.first_error = run.first_error or str(exc).splitlines()[0]

    try:
        await asyncio.gather(*(one(i) for i in range(requests)))
    finally:
        await engine.dispose()
    return run


async def after_a_move(
    url: URL,
    holder_url: str,
    *,
    connect_args: dict[str, Any] | None = None,
    runs: int = 6,
    commit: bool = True,
) -> str | None:
    """What happens when a client's transaction lands on another server connection, made to
    happen: None if its query still works, else the driver's error.

    One client connection runs a query `runs` times, committing each (psycopg prepares a
    query on its 6th run), or, with ``commit=False``, rolling each back as a read-only
    request's session does when it closes. Then another client (`holder_url`, a libpq URL
    through the same PgBouncer) opens a transaction: PgBouncer gives it the server connection
    just released (it reuses the most recent one first), so the first client's next
    transaction gets the other server connection, where nothing was prepared.
    """
    engine = create_async_engine(url, pool_size=1, max_overflow=0, connect_args=connect_args or {})
    query = select(User).where(User.id == 1)
    try:
        async with AsyncSession(engine) as session:
            for _ in range(runs):
                await session.scalar(query)
                await (session.commit() if commit else session.rollback())
        async with await psycopg.AsyncConnection.connect(holder_url) as holder:
            await holder.execute("SELECT 1")  # holds a server connection: its transaction is open
            try:
                async with AsyncSession(engine) as session:
                    await session.scalar(query)
                    await session.commit()
            except Exception as exc:  # the driver's errors, whatever their class
                return f"{type(driver_error(exc)).__name__}: {str(exc).splitlines()[0]}"
        return None
    finally:
        await engine.dispose()
