"""Prepared statements through PgBouncer's transaction pooling: what fails, and what stays.

A prepared statement lives on the server connection that prepared it. Behind transaction
pooling, a client's next transaction may run on another server connection, where that
statement does not exist, or where another client already prepared one of the same name.
`requests_through` runs requests the way an app's routes do (one `AsyncSession` each, one of
four queries, then a commit) from many tasks over a small pool, and counts what fails;
`after_a_move` makes one move happen on purpose. A setting can stop the failures and still
leave named statements behind on PgBouncer's server connections, where nothing will use or
close them: `statements_left` counts them on each server connection.

The rest check what the lesson says about the drivers: which statements a setting leaves on a
connection (`named_statements`), how each driver numbers its statements
(`statement_names`), and that a rollback does not undo a ``PREPARE`` (`prepare_and_roll_back`).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from labkit.infra.postgres import libpq_url
from labkit.shop.models import Post, User


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
    holder_url: str | None = None,
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
    through the same PgBouncer; by default `url`'s) opens a transaction: PgBouncer gives it
    the server connection just released (it reuses the most recent one first), so the first
    client's next transaction gets the other server connection, where nothing was prepared.
    """
    holder_url = holder_url or libpq_url(url)
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


def statements_left(bouncer_url: str, server_connections: int) -> list[int]:
    """How many prepared statements each of PgBouncer's server connections holds, one count
    per server connection, fewest first.

    ``pg_prepared_statements`` lists only the statements of the session that reads it, and no
    view shows another session's. So this borrows every server connection at once: it opens
    `server_connections` clients through PgBouncer (`bouncer_url`, a libpq URL) and keeps a
    transaction open on each, which in transaction pooling holds one server connection per
    client; then each reads the view on its own. A server connection PgBouncer had not opened
    yet is opened for this, and counts 0, as it should.
    """
    clients = [
        psycopg.connect(bouncer_url, prepare_threshold=None) for _ in range(server_connections)
    ]
    try:
        counts: dict[int, int] = {}
        for client in clients:  # each SELECT opens a transaction, which keeps its connection
            row = client.execute(
                "SELECT pg_backend_pid(), count(*) FROM pg_prepared_statements"
            ).fetchone()
            assert row is not None
            counts[row[0]] = row[1]
        if len(counts) != server_connections:  # two clients on one server connection
            raise RuntimeError(f"expected {server_connections} server connections: {counts}")
        return sorted(counts.values())
    finally:
        for client in clients:
            client.close()


async def named_statements(
    url: URL, *, connect_args: dict[str, Any] | None = None, runs: int = 6
) -> dict[str, str]:
    """The named statements left on one connection (to `url`, directly: no PgBouncer) after
    one session ran `after_a_move`'s query `runs` times, committing each, name by name with
    their SQL: what the driver and SQLAlchemy keep prepared with these `connect_args`.
    Unnamed statements are not listed: the server keeps one per connection, replaced by the
    next."""
    engine = create_async_engine(url, pool_size=1, max_overflow=0, connect_args=connect_args or {})
    query = select(User).where(User.id == 1)
    listing = text(
        "SELECT name, statement FROM pg_prepared_statements "
        "WHERE statement NOT LIKE '%pg_prepared_statements%' ORDER BY prepare_time"
    )  # the listing may be prepared too: it is left out
    try:
        async with AsyncSession(engine) as session:
            for _ in range(runs):
                await session.scalar(query)
                await session.commit()
            return dict((await session.execute(listing)).tuples().all())
    finally:
        await engine.dispose()


_FIRST_ASYNCPG_NAME = """\
import asyncio, sys
import asyncpg

async def main():
    connection = await asyncpg.connect(sys.argv[1])
    statement = await connection.prepare("SELECT 1")
    print(statement.get_name())
    await connection.close()

asyncio.run(main())
"""


async def statement_names(database: str, connections: int = 2) -> dict[str, list[str]]:
    """The name each driver gives the first statement it prepares on each of `connections`
    connections to `database` (a libpq URL): asyncpg's in this process, asyncpg's in a new
    process per connection (as each worker of ``serve --workers`` is), and psycopg's.

    asyncpg numbers its statements with one counter per process (a module global in
    ``asyncpg.connection``); psycopg with one per connection.
    """
    import asyncpg  # only this check needs asyncpg itself

    async def asyncpg_here() -> str:
        connection = await asyncpg.connect(database)
        try:
            return (await connection.prepare("SELECT 1")).get_name()
        finally:
            await connection.close()

    async def asyncpg_in_a_new_process() -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _FIRST_ASYNCPG_NAME, database,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"the new process failed (exit {process.returncode})")
        return out.decode().strip()

    async def psycopg_here() -> str:
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            await conn.execute("SELECT 1", prepare=True)
            cursor = await conn.execute("SELECT name FROM pg_prepared_statements")
            row = await cursor.fetchone()
            assert row is not None
            return str(row[0])

    return {
        "asyncpg, connections of this process": [await asyncpg_here() for _ in range(connections)],
        "asyncpg, a new process for each connection": list(
            await asyncio.gather(*(asyncpg_in_a_new_process() for _ in range(connections)))
        ),
        "psycopg, connections of this process": [await psycopg_here() for _ in range(connections)],
    }


@dataclass
class RolledBack:
    """What a rollback does to prepared statements, on one connection."""

    after_rollback: list[str]
    """Listed after ``BEGIN; PREPARE ...; ROLLBACK``."""
    after_failure: list[str]
    """Listed after a transaction that prepared a statement, then failed, then rolled back."""
    type_recreated: str
    """The error of a statement prepared on a type that the rollback dropped and that was then
    created again: the object psycopg's cache might point at, gone."""


def prepare_and_roll_back(database: str) -> RolledBack:
    """``PREPARE`` in transactions that end in a rollback, on a connection to `database` (a
    libpq URL, direct): the statements stay. Then a statement on a type created in the rolled
    back transaction: the rollback drops the type, and the statement fails on the new one."""
    with psycopg.connect(database, prepare_threshold=None) as conn:  # psycopg prepares nothing
        names = "SELECT name FROM pg_prepared_statements ORDER BY name"
        conn.execute("PREPARE kept AS SELECT 1")
        conn.rollback()
        after_rollback = [row[0] for row in conn.execute(names).fetchall()]
        conn.rollback()
        conn.execute("PREPARE kept_too AS SELECT 2")
        try:
            conn.execute("SELECT 1 / 0")
        except psycopg.errors.DivisionByZero:
            conn.rollback()
        after_failure = [row[0] for row in conn.execute(names).fetchall()]
        conn.rollback()
        conn.execute("CREATE TYPE lab_mood AS ENUM ('calm', 'busy')")
        conn.execute("PREPARE on_mood AS SELECT 'calm'::lab_mood")
        conn.execute("EXECUTE on_mood")
        conn.rollback()  # drops lab_mood; on_mood stays
        conn.execute("CREATE TYPE lab_mood AS ENUM ('calm', 'busy')")
        try:
            conn.execute("EXECUTE on_mood")
            type_recreated = ""
        except psycopg.Error as exc:
            type_recreated = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        conn.rollback()  # the new lab_mood goes too
        conn.execute("DEALLOCATE ALL")
        conn.commit()
    return RolledBack(after_rollback, after_failure, type_recreated)
