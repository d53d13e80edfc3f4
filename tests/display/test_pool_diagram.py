"""The pool picture reads the live pool and sessions without changing them, and draws them all."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib
import pytest
from matplotlib.patches import FancyBboxPatch
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.display.pool_diagram import PoolReading, SessionReading, plot_pool, read_pool
from labkit.shop.models import User

matplotlib.use("Agg")


def count_users() -> object:
    return select(func.count()).select_from(User)


@pytest.fixture
def database(db_url: URL) -> Iterator[SyncDatabase]:
    database = SyncDatabase.create(db_url)
    create_and_seed(database.engine)  # leaves one connection idle in the pool
    try:
        yield database
    finally:
        database.dispose()


def test_reading_shows_which_session_holds_which_connection(database: SyncDatabase) -> None:
    queried, returned, untouched = (database.SessionLocal() for _ in range(3))
    try:
        queried.scalar(count_users())  # takes the idle connection
        returned.scalar(count_users())  # opens a second one...
        returned.close()  # ...which goes back to the pool, still open
        reading = read_pool(database.engine, [queried, untouched])
    finally:
        queried.close()
        untouched.close()
    assert reading == PoolReading(
        database=f"{database.engine.dialect.name} ({database.engine.dialect.driver})",
        pool_class="QueuePool",
        pool_size=5,
        max_overflow=10,
        checked_out=1,
        idle=1,
        sessions=(
            SessionReading("sync session 1", 0),
            SessionReading("sync session 3", None),
        ),
    )


def test_reading_a_session_in_a_transaction_without_a_statement_checks_nothing_out(
    database: SyncDatabase,
) -> None:
    with database.SessionLocal() as session:
        session.add(User(name="Ada", email="ada.reading@example.com"))  # begins, sends nothing
        assert session.get_transaction() is not None
        reading = read_pool(database.engine, [session])
        assert database.engine.pool.checkedout() == 0
    assert reading.sessions == (SessionReading("sync session 1", None),)
    assert reading.checked_out == 0


@pytest.mark.anyio
async def test_an_async_session_reads_as_holding_its_connection(
    database: SyncDatabase, db_url: URL
) -> None:
    async_db = AsyncDatabase.create(db_url)  # on the tables and users `database` made
    try:
        async with async_db.AsyncSessionLocal() as session:
            await session.scalar(count_users())
            reading = read_pool(async_db.engine, [session])
    finally:
        await async_db.dispose()
    assert reading.sessions == (SessionReading("async session 1", 0),)
    assert reading.checked_out == 1


def test_the_picture_has_a_box_for_every_connection_and_session() -> None:
    reading = PoolReading(
        database="sqlite (pysqlite)",
        pool_class="QueuePool",
        pool_size=5,
        max_overflow=10,
        checked_out=2,
        idle=1,
        sessions=(SessionReading("a", 0), SessionReading("b", 1), SessionReading("c", None)),
    )
    figure = plot_pool(reading, "title")
    (axes,) = figure.axes
    boxes = [p for p in axes.patches if isinstance(p, FancyBboxPatch)]
    # engine, pool, 2 checked out + 1 idle + "12 more", 3 sessions
    assert len(boxes) == 2 + 4 + 3
    texts = [t.get_text() for t in axes.texts]
    assert "12 more the\npool may open" in texts
    assert "c\nno connection yet" in texts
    assert axes.get_title() == "title"
