"""Transactions in a request: all or nothing, get-or-create with a savepoint, SQLite's savepoints
without a BEGIN, and concurrent withdrawals (lost by the naive route, kept by its fixes)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, PendingRollbackError
from sqlalchemy.orm import Session
from support import assert_nothing_held

from labkit import AsyncDatabase, EngineOptions, SyncDatabase, User, lab_client
from labkit.experiments.lost_updates import withdraw_concurrently
from labkit.instrumented.transactions import (
    STRATEGIES,
    add_user_once,
    open_accounts,
    transactions_app,
)
from labkit.seed import create_and_seed
from labkit.shop.models import Base as ShopBase
from labkit.shop.sqlite_transactions import begin_sqlite_transactions

pytestmark = pytest.mark.anyio


async def test_a_transfer_is_all_or_nothing(db_url: URL) -> None:
    database, async_database = SyncDatabase.create(db_url), AsyncDatabase.create(db_url)
    ada, bob = open_accounts(database.engine, {"ada": 100, "bob": 0})
    try:
        async with lab_client(transactions_app(database, async_database)) as client:
            for path in ("/transfers", "/async/transfers"):
                ok = await client.post(path, json={"from_id": ada, "to_id": bob, "amount": 30})
                assert ok.status_code == 200
                too_much = {"from_id": ada, "to_id": bob, "amount": 1000}
                assert (await client.post(path, json=too_much)).status_code == 409
                nobody = {"from_id": ada, "to_id": 999, "amount": 1}
                assert (await client.post(path, json=nobody)).status_code == 404
                bad = {"from_id": ada, "to_id": bob, "amount": -5}
                assert (await client.post(path, json=bad)).status_code == 422
            balances = [(await client.get(f"/accounts/{i}")).json()["balance"] for i in (ada, bob)]
        assert balances == [40, 60]  # two transfers of 30; the refused ones left no trace
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
