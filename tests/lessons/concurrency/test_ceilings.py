"""The ceilings measure their one part, on the lab's database, and report a rate."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_nothing_held

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.lessons.concurrency.ceilings import (
    async_session_gets,
    connection_costs,
    raw_sqlite_lookups,
    session_gets,
)
from labkit.settings import sqlite_url

pytestmark = pytest.mark.anyio


async def test_each_part_is_faster_than_the_next_one_up(tmp_path: Path) -> None:
    # SQLite whatever DATABASE_URL says: the raw-driver ceiling is sqlite3's own.
    db_url = sqlite_url(tmp_path / "lab.db")
    sync_db, async_db = SyncDatabase.create(db_url), AsyncDatabase.create(db_url)
    create_and_seed(sync_db.engine)
    try:
        raw = raw_sqlite_lookups(db_url.database, seconds=0.05)
        orm = session_gets(sync_db, seconds=0.05)
        orm_async = await async_session_gets(async_db, seconds=0.05)
        costs = await connection_costs(async_db, repeats=3)
        assert_nothing_held(sync_db, async_db)
    finally:
        sync_db.dispose()
        await async_db.dispose()
    assert raw > orm > 0 and orm_async > 0
    assert 0 < costs["pooled"] < costs["new"]
