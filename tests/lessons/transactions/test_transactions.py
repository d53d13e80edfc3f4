"""Transactions in a request: all or nothing, get-or-create with a savepoint, SQLite's savepoints
without a BEGIN, concurrent transfers and withdrawals (lost by the naive routes, kept by their
fixes), which reads wait for a row another transaction has locked, and what an isolation level
does to a read-modify-write that another transaction overtook."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, PendingRollbackError
from sqlalchemy.orm import Session
from support import assert_nothing_held, every_backend

from labkit.app.client import lab_client
from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.lessons.transactions.accounts import (
    STRATEGIES,
    add_user_once,
    open_accounts,
    transactions_app,
)
from labkit.lessons.transactions.isolation_levels import second_writer
from labkit.lessons.transactions.lost_updates import (
    Withdrawals,
    transfer_at_once,
    withdraw_concurrently,
)
from labkit.lessons.transactions.row_locks import reads_beside_a_lock
from labkit.shop.models import Base as ShopBase
from labkit.shop.models import User
from labkit.shop.sqlite_transactions import begin_sqlite_transactions

pytestmark = pytest.mark.anyio


async def test_a_transfer_is_all_or_nothing(db_url: URL) -> None:
    database, async_database = SyncDatabase.create(db_url), AsyncDatabase.create(db_url)
    ada, bob = open_accounts(database.engine, {"ada": 100, "bob": 0})
    try:
        async with lab_client(transactions_app(database, async_database)) as client:
            for path in ("/transfers", "/atomic/transfers", "/async/atomic/transfers"):
                ok = await client.post(path, json={"from_id": ada, "to_id": bob, "amount": 30})
                assert ok.status_code == 200
                too_much = {"from_id": ada, "to_id": bob, "amount": 1000}
                assert (await client.post(path, json=too_much)).status_code == 409
                nobody = {"from_id": ada, "to_id": 999, "amount": 1}
                assert (await client.post(path, json=nobody)).status_code == 404
                bad = {"from_id": ada, "to_id": bob, "amount": -5}
                assert (await client.post(path, json=bad)).status_code == 422
                to_herself = {"from_id": ada, "to_id": ada, "amount": 5}
                assert (await client.post(path, json=to_herself)).status_code == 422
            balances = [(await client.get(f"/accounts/{i}")).json()["balance"] for i in (ada, bob)]
        assert balances == [10, 90]  # three transfers of 30; the refused ones left no trace
        assert_nothing_held(database, async_database)
    finally:
        database.dispose()
        await async_database.dispose()


@pytest.mark.parametrize("strategy", [*STRATEGIES, "atomic-commit"])
async def test_each_withdrawal_route_answers_bad_input(db_url: URL, strategy: str) -> None:
    database = SyncDatabase.create(db_url)
    (ada,) = open_accounts(database.engine, {"ada": 10})
    try:
        async with lab_client(transactions_app(database)) as client:
            path = f"/{strategy}/accounts/{ada}/withdrawals"
            assert (await client.post(path, params={"amount": 3})).json()["balance"] == 7
            assert (await client.post(path, params={"amount": 8})).status_code == 409
            assert (await client.post(path, params={"amount": 0})).status_code == 422
            missing = f"/{strategy}/accounts/999/withdrawals"
            assert (await client.post(missing, params={"amount": 1})).status_code == 404
        assert_nothing_held(database)
    finally:
        database.dispose()


async def test_concurrent_withdrawals_lose_nothing_with_the_fixes(db_url: URL) -> None:
    """The naive route loses updates; the atomic UPDATE and the versioned row do not (on both
    databases). ``FOR UPDATE`` is left out: SQLite ignores it, the notebook shows that."""
    database = SyncDatabase.create(db_url, EngineOptions(latency_ms=2, pool_size=5))
    (ada,) = open_accounts(database.engine, {"ada": 1000})
    try:
        async with lab_client(transactions_app(database)) as client:
            runs = {
                strategy: await withdraw_concurrently(
                    client, strategy, ada, requests=20, concurrency=5
                )
                for strategy in ("naive", "atomic", "versioned")
            }
        assert all(run.done == 20 and not run.failed for run in runs.values())
        assert runs["naive"].lost > 0
        assert runs["atomic"].lost == runs["versioned"].lost == 0
        assert runs["versioned"].retries > 0
        assert_nothing_held(database)
    finally:
        database.dispose()


async def test_two_transfers_at_once_lose_a_debit_unless_the_database_adds(db_url: URL) -> None:
    """Two transfers of 60 from 100 at once: the route that writes back balances computed in
    Python answers 200 twice and takes 60 only; the one that lets the database add refuses the
    second (its CHECK constraint); both ways at once, it neither deadlocks nor loses a cent."""
    database = SyncDatabase.create(db_url, EngineOptions(latency_ms=10))
    try:
        async with lab_client(transactions_app(database)) as client:
            ada, bob = open_accounts(database.engine, {"ada": 100, "bob": 0})
            naive = await transfer_at_once(
                client, "/transfers", [(ada, bob, 60)] * 2, database.engine
            )
            ada, bob = open_accounts(database.engine, {"ada": 100, "bob": 0})
            atomic = await transfer_at_once(
                client, "/atomic/transfers", [(ada, bob, 60)] * 2, database.engine
            )
            ada, bob = open_accounts(database.engine, {"ada": 100, "bob": 100})
            both_ways = await transfer_at_once(
                client, "/atomic/transfers", [(ada, bob, 60), (bob, ada, 60)], database.engine
            )
        assert naive.at_once and atomic.at_once and both_ways.at_once
        assert naive.answers == ["200", "200"]
        assert naive.promised[ada] == -20 and naive.after[ada] == 40  # one debit of the two
        assert sorted(atomic.answers) == ["200", "409"]
        assert atomic.after == atomic.promised == {ada: 40, bob: 60}
        assert both_ways.answers == ["200", "200"]
        assert both_ways.after == both_ways.before == {ada: 100, bob: 100}
        assert_nothing_held(database)
    finally:
        database.dispose()


def test_most_at_once_counts_overlapping_holds() -> None:
    run = Withdrawals("atomic", 3, 2, 10, 7, 1.0, held=[(0.0, 2.0), (1.0, 3.0), (3.0, 4.0)])
    assert run.most_at_once == 2  # the first two overlap; the third starts as the second ends
    assert Withdrawals("atomic", 2, 1, 10, 8, 1.0, held=[(0.0, 1.0), (1.0, 2.0)]).most_at_once == 1
    assert Withdrawals("atomic", 0, 1, 10, 10, 1.0).most_at_once == 0


@every_backend
async def test_writers_of_two_rows_overlap_on_postgres_only(db_url: URL) -> None:
    """`most_at_once` sees writers that do not wait for each other: on PostgreSQL, those of two
    rows. SQLite has one write lock for the whole database, so even they take turns."""
    database = SyncDatabase.create(db_url, EngineOptions(latency_ms=5, pool_size=4))
    ada, bob = open_accounts(database.engine, {"ada": 100, "bob": 100})
    try:
        async with lab_client(transactions_app(database)) as client:
            sizes = {"requests": 10, "concurrency": 2, "engine": database.engine}
            one_row = await withdraw_concurrently(client, "atomic", ada, **sizes)
            two_rows = await asyncio.gather(
                *(withdraw_concurrently(client, "atomic", i, **sizes) for i in (ada, bob))
            )
        assert one_row.most_at_once == 1
        # Each run's instrument sees every transaction on the engine: both rows' writers.
        overlapping = 2 if db_url.get_backend_name() == "postgresql" else 1
        assert [run.most_at_once for run in two_rows] == [overlapping] * 2
    finally:
        database.dispose()


@every_backend
def test_a_plain_read_does_not_wait_for_a_locked_row(db_url: URL) -> None:
    database = SyncDatabase.create(db_url)
    (ada,) = open_accounts(database.engine, {"ada": 100})
    try:
        row = reads_beside_a_lock(database.engine, ada, hold_s=0.2)
    finally:
        database.dispose()
    assert (row.before, row.after) == (100, 99)
    assert all(read.started_s < row.commit_s for read in row.reads.values())
    plain, locking = row.reads["plain"], row.reads["for update"]
    assert not row.waited("plain") and plain.balance == 100  # the version committed before
    if db_url.get_backend_name() == "postgresql":
        assert locking.sql.endswith("FOR UPDATE")
        assert row.waited("for update") and locking.balance == 99
    else:  # SQLite has no FOR UPDATE: SQLAlchemy leaves it out, and nothing waits
        assert not locking.sql.endswith("FOR UPDATE")
        assert not row.waited("for update") and locking.balance == 100


def test_add_user_once_keeps_the_rest_of_the_transaction(db_url: URL) -> None:
    database = SyncDatabase.create(db_url)
    create_and_seed(database.engine)
    try:
        with database.SessionLocal() as db, db.begin():
            newcomer = add_user_once(db, "New", "new@example.com")
            existing = add_user_once(db, "Again", "user0001@example.com")  # the seed's
            assert (existing.id, existing.name) == (1, "Hedy Ritchie")
            new_id = newcomer.id
        with database.SessionLocal() as db:
            assert db.scalar(select(User.id).where(User.email == "new@example.com")) == new_id

        with database.SessionLocal() as db:  # without the savepoint, the duplicate ends it all
            db.add(User(name="Other", email="other@example.com"))
            db.add(User(name="Again", email="user0001@example.com"))
            with pytest.raises(IntegrityError):
                db.flush()
            with pytest.raises(PendingRollbackError):
                db.scalar(select(func.count()).select_from(User))
    finally:
        database.dispose()


@pytest.mark.parametrize("begins", [False, True], ids=["sqlite3's default", "BEGIN sent"])
def test_a_released_savepoint_outlives_the_rollback_without_begin(begins: bool) -> None:
    engine = create_engine("sqlite://")
    if begins:
        begin_sqlite_transactions(engine)
    ShopBase.metadata.create_all(engine)
    with engine.connect() as connection:
        transaction = connection.begin()
        with Session(connection, join_transaction_mode="create_savepoint") as db:
            db.add(User(name="Ada", email="ada@example.com"))
            db.commit()  # releases the savepoint only
        transaction.rollback()
        count = connection.scalar(select(func.count()).select_from(User))
    assert count == (0 if begins else 1)


@every_backend
def test_an_isolation_level_refuses_the_update_read_committed_loses(db_url: URL) -> None:
    """Two read-modify-writes of one balance, one after the other's read: PostgreSQL's default
    loses one; REPEATABLE READ and SERIALIZABLE refuse it (SQLSTATE 40001). SQLite reports
    SERIALIZABLE and still loses it, unless a real BEGIN puts the read in the transaction."""
    database = SyncDatabase.create(db_url)
    try:
        if db_url.get_backend_name() == "postgresql":
            levels = {None: "READ COMMITTED", "REPEATABLE READ": None, "SERIALIZABLE": None}
            for level, in_effect in levels.items():
                (ada,) = open_accounts(database.engine, {"ada": 100})
                second = second_writer(database.engine, ada, level)
                assert second.in_effect == (in_effect or level)
                assert (second.before, second.after) == (100, 99)
                if level is None:
                    assert second.error is None and second.lost == 1
                else:
                    assert second.sqlstate == "40001" and second.lost == 0
                    assert "SerializationFailure" in (second.error or "")
        else:
            for level in (None, "SERIALIZABLE"):
                (ada,) = open_accounts(database.engine, {"ada": 100})
                second = second_writer(database.engine, ada, level)
                assert second.in_effect == "SERIALIZABLE" and second.lost == 1
            begin_sqlite_transactions(database.engine)
            (ada,) = open_accounts(database.engine, {"ada": 100})
            second = second_writer(database.engine, ada)
            assert second.lost == 0 and "SQLITE_BUSY_SNAPSHOT" in (second.error or "")
    finally:
        database.dispose()


@every_backend
async def test_the_serializable_route_refuses_a_stale_write_on_postgres(db_url: URL) -> None:
    """Refused (409, Retry-After), never lost, on PostgreSQL; on SQLite the level changes
    nothing, and the same withdrawals lose updates as the naive route's do."""
    database = SyncDatabase.create(db_url, EngineOptions(latency_ms=2, pool_size=5))
    (ada,) = open_accounts(database.engine, {"ada": 1000})
    try:
        async with lab_client(transactions_app(database)) as client:
            sizes = {"requests": 20, "concurrency": 5}
            given_up = await withdraw_concurrently(
                client, "serializable", ada, retry_conflicts=False, **sizes
            )
            retried = await withdraw_concurrently(client, "serializable", ada, **sizes)
        if db_url.get_backend_name() == "postgresql":
            assert given_up.lost == 0 and given_up.failed["409"] > 0
            assert given_up.done + given_up.failed["409"] == 20
            assert retried.lost == 0 and retried.done == 20 and retried.retries > 0
        else:
            assert given_up.lost > 0 and not given_up.failed
        assert_nothing_held(database)
    finally:
        database.dispose()
