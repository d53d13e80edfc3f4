"""Relationships in async code, as notebook 04 teaches them: the plain lazy read raises, the
awaited read (`AsyncAttrs` on the shop app's `Base`) works at one query per object and costs
nothing once loaded, and `selectinload` sends one ``IN`` list per 500 keys."""

from __future__ import annotations

import gc
import math
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.exc import MissingGreenlet, StatementError
from sqlalchemy.orm import selectinload

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.instruments.sqllog import capture_sql
from labkit.shop.models import User

pytestmark = pytest.mark.anyio

FIRST_USERS = select(User).order_by(User.id).limit(5)


@pytest.fixture
async def async_db(db_url: URL) -> AsyncIterator[AsyncDatabase]:
    seeding = SyncDatabase.create(db_url)
    create_and_seed(seeding.engine)
    seeding.dispose()
    database = AsyncDatabase.create(db_url)
    yield database
    await database.dispose()


@pytest.mark.filterwarnings("ignore:coroutine 'Connection.cursor' was never awaited")
async def test_a_plain_lazy_read_raises_missing_greenlet_in_async_code(async_db) -> None:
    async with async_db.AsyncSessionLocal() as session:
        user = (await session.scalars(FIRST_USERS)).first()
        # aiosqlite's arrives inside a StatementError, asyncpg's bare
        with pytest.raises((MissingGreenlet, StatementError), match="greenlet_spawn") as raised:
            _ = user.posts
    # The failed read leaves the driver's cursor coroutine un-awaited: collect it here, where
    # its warning is expected, not in whichever test runs next.
    del raised
    gc.collect()


async def test_awaitable_attrs_reads_a_relationship_with_one_query_per_object(async_db) -> None:
    async with async_db.AsyncSessionLocal() as session:
        users = (await session.scalars(FIRST_USERS)).all()
        with capture_sql(async_db.engine) as sent:
            posts = {user.id: await user.awaitable_attrs.posts for user in users}
    assert len(sent) == len(users) == 5
    assert sum(map(len, posts.values())) > 0
    assert all(post.author_id == user_id for user_id, own in posts.items() for post in own)


async def test_awaitable_attrs_sends_nothing_for_a_loaded_relationship(async_db) -> None:
    async with async_db.AsyncSessionLocal() as session:
        with capture_sql(async_db.engine) as sent:
            statement = FIRST_USERS.options(selectinload(User.posts))
            users = (await session.scalars(statement)).all()
            for user in users:
                await user.awaitable_attrs.posts
    assert len(sent) == 2


async def test_selectinload_sends_one_in_list_per_500_keys(async_db) -> None:
    async with async_db.AsyncSessionLocal() as session:
        with capture_sql(async_db.engine) as sent:
            statement = select(User).options(selectinload(User.posts))
            users = (await session.scalars(statement)).all()
    keys = [len(sent.values(i)) for i in range(1, len(sent))]
    assert len(users) > 500
    assert keys == [500] * math.ceil(len(users) / 500)
