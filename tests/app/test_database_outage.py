"""When the database goes away, every setup answers at once with a 503 saying so; when it comes
back, the same app serves again, with no restart.

Each outage is checked through the lab's routes of all three setups, and through test-only
routes whose session dependency opens its connection before ``yield``, so that the failure is
raised inside the dependency (sync and async). The shared PostgreSQL server is never stopped:
the test's own database stops accepting connections and its backends are terminated, which is
what the app sees of a server going down.
"""

import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from support import admin

from labkit.app.client import BASE_URL, lab_client
from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions
from labkit.bench.setups import SETUPS
from labkit.settings import sqlite_url
from labkit.shop.database import SQLITE_TIMEOUT_S

pytestmark = pytest.mark.anyio

FAST_S = 2.0
"""A 503 within this is fast: well under the waits a failing request could otherwise sit in
(sqlite3's ``timeout`` 5 s, ``pool_timeout`` 30 s, a client's patience)."""
assert SQLITE_TIMEOUT_S > FAST_S

PATHS = [f"/{setup}/users/1" for setup in SETUPS] + ["/eager/sync", "/eager/async"]


def add_eager_routes(app: LabApp) -> None:
    """Test-only routes whose dependency connects before ``yield``, so an outage is raised
    inside the dependency rather than in the route."""
    sync_db, async_db = app.sync_db, app.async_db

    def connected_db() -> Iterator[Session]:
        with sync_db.SessionLocal() as session:
            session.connection()
            yield session

    async def connected_async_db() -> AsyncIterator[AsyncSession]:
        async with async_db.AsyncSessionLocal() as session:
            await session.connection()
            yield session

    @app.fastapi.get("/eager/sync")
    def eager_sync(db: Annotated[Session, Depends(connected_db)]) -> dict[str, bool]:
        return {"connected": db.in_transaction()}

    @app.fastapi.get("/eager/async")
    async def eager_async(
        db: Annotated[AsyncSession, Depends(connected_async_db)],
    ) -> dict[str, bool]:
        return {"connected": db.in_transaction()}


async def answers(client: httpx.AsyncClient) -> dict[str, tuple[int, str, float]]:
    """Each path's status, ``detail`` (if any) and time taken."""
    found = {}
    for path in PATHS:
        start = time.perf_counter()
        response = await client.get(path)
        elapsed = time.perf_counter() - start
        detail = response.json().get("detail", "")
        if response.status_code == 503:
            assert response.headers["retry-after"], path
        found[path] = (response.status_code, detail, elapsed)
    return found


def assert_all_fast_503(found: dict[str, tuple[int, str, float]], cause_words: set[str]) -> None:
    for path, (status, detail, elapsed) in found.items():
        assert status == 503, (path, status, detail)
        assert detail.startswith("the database is unavailable ("), (path, detail)
        assert detail.endswith("); retry"), (path, detail)
        assert any(word in detail for word in cause_words), (path, detail)
        assert elapsed < FAST_S, (path, elapsed)


def assert_all_served(found: dict[str, tuple[int, str, float]]) -> None:
    assert {path: status for path, (status, _, _) in found.items()} == dict.fromkeys(PATHS, 200)


async def empty_pools(app: LabApp) -> None:
    app.sync_db.dispose()
    await app.async_db.dispose()


async def test_unusable_sqlite_file_gives_fast_503_and_the_app_recovers(tmp_path: Path) -> None:
    """Root may read any file, so "unreadable" is made with a directory in the file's place.

    An SQLite connection already open keeps the file it opened, whatever happens to its path
    (moved, deleted, replaced), so the outage reaches the app when it opens a connection: here
    right after its pools are emptied, as when a pool replaces its connections or the app starts.
    """
    db_file = tmp_path / "data" / "lab.db"
    app = create_app(sqlite_url(db_file))
    add_eager_routes(app)
    aside = tmp_path / "aside"
    async with lab_client(app) as client:
        assert_all_served(await answers(client))

        await empty_pools(app)
        shutil.move(db_file.parent, aside)
        db_file.mkdir(parents=True)
        down = await answers(client)

        shutil.rmtree(db_file.parent)
        shutil.move(aside, db_file.parent)
        back = await answers(client)

    assert_all_fast_503(down, {"SQLITE_CANTOPEN"})
    assert all(str(tmp_path) not in detail for _, detail, _ in down.values())
    assert_all_served(back)


async def test_no_server_listening_gives_fast_503_from_every_setup() -> None:
    """Nothing listens on port 1. asyncpg reports that as a bare `ConnectionRefusedError`,
    psycopg as an `OperationalError`; both are the same outage to a client. (No lifespan: the
    app could not create its tables, so the client talks to the routes directly.)"""
    app = create_app("postgresql://lab@127.0.0.1:1/lab", EngineOptions(pool_timeout=FAST_S))
    add_eager_routes(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        down = await answers(client)
    await empty_pools(app)
    assert_all_fast_503(down, {"OperationalError", "ConnectionRefusedError"})


def stop_accepting(url: URL) -> None:
    """What the app sees of a server going down: its connections cut, new ones refused."""
    admin(f"ALTER DATABASE {url.database} ALLOW_CONNECTIONS false")
    terminate_backends(url)


def terminate_backends(url: URL) -> None:
    admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{url.database}' AND pid <> pg_backend_pid()"
    )


async def test_postgres_going_away_gives_fast_503_and_the_app_recovers(postgres_url: URL) -> None:
    app = create_app(postgres_url)
    add_eager_routes(app)
    async with lab_client(app) as client:
        assert_all_served(await answers(client))

        stop_accepting(postgres_url)
        down = await answers(client)
        again = await answers(client)  # now on connections the app tries to open afresh

        admin(f"ALTER DATABASE {postgres_url.database} ALLOW_CONNECTIONS true")
        back = await answers(client)

    # psycopg: AdminShutdown (cut) or OperationalError (refused). asyncpg: InterfaceError (cut)
    # or the server's refusal, ObjectNotInPrerequisiteStateError.
    causes = {"AdminShutdown", "OperationalError", "InterfaceError", "PrerequisiteState"}
    assert_all_fast_503(down, causes)
    assert_all_fast_503(again, causes)
    assert_all_served(back)


@pytest.mark.parametrize("pre_ping", [False, True])
async def test_after_a_server_restart_pre_ping_spares_the_first_request(
    postgres_url: URL, pre_ping: bool
) -> None:
    """Connections cut while the app is idle (a restart) sit dead in the pool. Without
    ``pool_pre_ping`` the first request on each engine meets one, answers 503, and SQLAlchemy
    replaces the whole pool; with it, the check at checkout replaces the dead connection first."""
    app = create_app(postgres_url, EngineOptions(pool_pre_ping=pre_ping))
    add_eager_routes(app)
    async with lab_client(app) as client:
        assert_all_served(await answers(client))
        terminate_backends(postgres_url)
        first = await answers(client)
        second = await answers(client)

    failed = [path for path, (status, _, _) in first.items() if status != 200]
    if pre_ping:
        assert failed == []
    else:  # one per engine: the sync one (blocking, threadpool) and the async one
        assert failed == ["/blocking/users/1", "/async/users/1"], first
        assert_all_fast_503({path: first[path] for path in failed}, {"AdminShutdown", "Interface"})
    assert_all_served(second)


async def test_a_missing_table_is_a_500_not_an_outage(tmp_path: Path) -> None:
    """sqlite3 files "no such table" under `OperationalError`, like a locked or missing file.
    It is a bug, not an outage: the app must not tell clients to retry it forever."""
    app = create_app(sqlite_url(tmp_path / "lab.db"))
    async with lab_client(app) as client:
        with app.sync_db.engine.begin() as conn:
            conn.execute(text("DROP TABLE posts"))
            conn.execute(text("DROP TABLE users"))
        for setup in SETUPS:
            with pytest.raises(OperationalError, match="no such table"):
                await client.get(f"/{setup}/users/1")
