"""The session ledger counts every session once, and its log says which setup a session is of."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.engine import URL

from labkit.app.databases import AsyncDatabase, SyncDatabase

pytestmark = pytest.mark.anyio


async def test_the_log_names_the_setup_of_each_session(
    db_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    sync_db, async_db = SyncDatabase.create(db_url), AsyncDatabase.create(db_url)
    try:
        with caplog.at_level(logging.INFO, logger="labkit.sessions"):
            with sync_db.SessionLocal():
                pass
            async with async_db.AsyncSessionLocal():
                pass
    finally:
        sync_db.dispose()
        await async_db.dispose()
    assert [r.getMessage() for r in caplog.records if r.name == "labkit.sessions"] == [
        "sync session 1 opened",
        "sync session 1 closed",
        "async session 1 opened",
        "async session 1 closed",
    ]


def test_a_session_closed_twice_counts_once(db_url: URL) -> None:
    database = SyncDatabase.create(db_url)
    try:
        session = database.SessionLocal()
        session.close()
        session.close()  # as a context manager does after a route that closed its session
        assert (database.ledger.opened, database.ledger.closed, database.ledger.open) == (1, 1, 0)
    finally:
        database.dispose()
