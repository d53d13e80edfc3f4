"""Transactions in a request, and five ways to take money from one balance, as people write
them.

- `get_db_in_transaction` (and its async twin): one session per request inside
  ``SessionLocal.begin()``, so the request's work is committed when the route returns and rolled
  back when it raises. It is asked for with ``scope="function"``: the COMMIT happens before the
  response is sent, so a client never reads "done" for work that was not saved.
- ``POST /transfers``: two balances change together or not at all. The table's CHECK
  constraint refuses a negative balance; the route turns that into a 409, and the dependency
  rolls the whole transfer back. It reads both balances and writes back values computed in
  Python, so it is right one request at a time only: two transfers that read the same balance
  both write, one of them is lost, and the CHECK constraint never sees the overdraft.
- ``POST /atomic/transfers`` (and ``/async/atomic/transfers``): the same transfer, safe at
  once: each ``UPDATE`` adds to the database's own value, the CHECK constraint refuses the
  second of two debits that do not both fit, and the rows are taken in id order, so two
  transfers in opposite directions cannot deadlock.
- ``POST /{naive,atomic,locked,versioned}/accounts/{id}/withdrawals``: the same withdrawal four
  ways (a fifth follows). ``naive`` reads the balance, subtracts in Python and writes it back:
  two requests that read the same balance both write, and one withdrawal is lost. ``atomic``
  lets the database subtract (``UPDATE ... SET balance = balance - :amount WHERE balance >=
  :amount``); ``locked`` reads with ``SELECT ... FOR UPDATE``, so a second locking read waits
  for the first to commit (a plain ``SELECT`` does not wait, on PostgreSQL; SQLite has no ``FOR
  UPDATE`` at all); ``versioned`` maps the same table with ``version_id_col``, so a write based
  on a stale read matches no row, SQLAlchemy raises `StaleDataError`, and the client gets a 409
  with ``Retry-After``: unlike "insufficient funds", also a 409, trying again can work.
- ``POST /serializable/accounts/{id}/withdrawals``: the naive read-modify-write in a
  ``SERIALIZABLE`` transaction. On PostgreSQL the database refuses a write based on a read that
  a concurrent transaction has since changed: SQLSTATE 40001, a serialization failure (under
  ``REPEATABLE READ`` too). The route answers it with a 409 and ``Retry-After``, as the versioned
  route does, and the client sends the withdrawal again. SQLite accepts the level and changes
  nothing: sqlite3 runs the read outside any transaction (see `begin_sqlite_transactions`).
- ``POST /atomic-commit/...``: the atomic withdrawal on the shop app's `SessionDep`, committing in
  the route right after its ``UPDATE``: the row is held for the COMMIT only, not also while
  FastAPI returns from the route and runs the dependency's exit.
- `add_user_once`: get-or-create with a SAVEPOINT (``begin_nested()``): a duplicate email undoes
  only the INSERT, and the rest of the transaction goes on.

`transactions_app` serves them on the lab's databases through ``app.dependency_overrides``.
No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Self, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import CheckConstraint, Engine, String, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql.dml import ReturningUpdate

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.lessons.timeline import lesson_lifespan
from labkit.shop.database import AsyncSessionLocal, SessionDep, SessionLocal, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import MAX_ID, User


class Base(DeclarativeBase):
    """The lesson's own tables, apart from the shop app's."""


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="no_overdraft"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    balance: Mapped[int]  # in cents
    version: Mapped[int] = mapped_column(default=1)

    def __repr__(self) -> str:
        return f"Account(id={self.id!r}, owner={self.owner!r}, balance={self.balance!r})"


class VersionedAccount(Base):
    """The same table, mapped with optimistic locking: every UPDATE checks and bumps `version`."""

    __table__ = Account.__table__
    __mapper_args__ = {"version_id_col": Account.__table__.c.version}  # noqa: RUF012

    # For type checkers: the columns come from `__table__`, matched by name.
    id: Mapped[int]
    balance: Mapped[int]


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    balance: int


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_id: int = Field(ge=1, le=MAX_ID)
    to_id: int = Field(ge=1, le=MAX_ID)
    amount: int = Field(gt=0, description="Cents.")

    @model_validator(mode="after")
    def between_two_accounts(self) -> Self:
        if self.from_id == self.to_id:
            raise ValueError("from_id and to_id must differ")
        return self


AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]
Amount = Annotated[int, Query(gt=0, description="Cents.")]


# One transaction per request: committed when the route returns, rolled back when it raises.
def get_db_in_transaction() -> Iterator[Session]:
    with SessionLocal.begin() as session:
        yield session


async def get_async_db_in_transaction() -> AsyncIterator[AsyncSession]:
    async with AsyncSessionLocal.begin() as session:
        yield session


# scope="function": the COMMIT runs before the response is sent, not after it.
TransactionDep = Annotated[Session, Depends(get_db_in_transaction, scope="function")]
AsyncTransactionDep = Annotated[
    AsyncSession, Depends(get_async_db_in_transaction, scope="function")
]

router = APIRouter()


AnyAccount = TypeVar("AnyAccount", Account, VersionedAccount)


def found(account: AnyAccount | None, account_id: int) -> AnyAccount:
    if account is None:
        raise HTTPException(status_code=404, detail=f"no account with id {account_id}")
    return account


def overdraft() -> HTTPException:
    return HTTPException(status_code=409, detail="insufficient funds")


@router.get("/accounts/{account_id}")
def read_account(account_id: AccountId, db: TransactionDep) -> AccountOut:
    return AccountOut.model_validate(found(db.get(Account, account_id), account_id))


@router.post("/transfers")
def transfer(payload: TransferIn, db: TransactionDep) -> list[AccountOut]:
    source = found(db.get(Account, payload.from_id), payload.from_id)
    target = found(db.get(Account, payload.to_id), payload.to_id)
    source.balance -= payload.amount
    target.balance += payload.amount
    try:
        db.flush()  # both UPDATEs; the CHECK constraint refuses a negative balance here
    except IntegrityError:
        raise overdraft() from None  # the dependency rolls back whatever was sent
    return [AccountOut.model_validate(source), AccountOut.model_validate(target)]


def add_to(account_id: int, cents: int) -> ReturningUpdate[int]:
    """The database adds `cents` (a debit if negative) to its own value of the balance: no read
    before it for another request to slip in after. Returns the new balance (no row: no such
    account); the CHECK constraint refuses one below 0."""
    return (
        update(Account)
        .where(Account.id == account_id)
        .values(balance=Account.balance + cents)
        .returning(Account.balance)
    )


def in_id_order(payload: TransferIn) -> list[tuple[int, int]]:
    """The transfer's two changes, ``(account id, cents)``, lowest id first. Two transfers between
    the same accounts, in either direction, then lock the rows in the same order: neither can
    hold one row while it waits for the other's (a deadlock)."""
    changes = {payload.from_id: -payload.amount, payload.to_id: payload.amount}
    return sorted(changes.items())


@router.post("/atomic/transfers")
def transfer_atomic(payload: TransferIn, db: TransactionDep) -> list[AccountOut]:
    balances = {}
    for account_id, cents in in_id_order(payload):
        try:
            balance = db.scalar(add_to(account_id, cents))
        except IntegrityError:  # the CHECK constraint: the debit would leave less than 0
            raise overdraft() from None
        if balance is None:
            raise HTTPException(status_code=404, detail=f"no account with id {account_id}")
        balances[account_id] = balance
    return [AccountOut(id=i, balance=balances[i]) for i in (payload.from_id, payload.to_id)]


@router.post("/async/atomic/transfers")
async def transfer_atomic_async(payload: TransferIn, db: AsyncTransactionDep) -> list[AccountOut]:
    balances = {}
    for account_id, cents in in_id_order(payload):
        try:
            balance = await db.scalar(add_to(account_id, cents))
        except IntegrityError:
            raise overdraft() from None
        if balance is None:
            raise HTTPException(status_code=404, detail=f"no account with id {account_id}")
        balances[account_id] = balance
    return [AccountOut(id=i, balance=balances[i]) for i in (payload.from_id, payload.to_id)]


@router.post("/naive/accounts/{account_id}/withdrawals")
def withdraw_naive(account_id: AccountId, amount: Amount, db: TransactionDep) -> AccountOut:
    account = found(db.get(Account, account_id), account_id)
    if account.balance < amount:
        raise overdraft()
    account.balance -= amount  # computed from what this request read: UPDATE ... SET balance = ?
    return AccountOut.model_validate(account)


def subtract(account_id: int, amount: int) -> ReturningUpdate[int]:
    """The database subtracts from its own value, if the row has enough: one statement, with no
    read before it for another request to slip in after. Returns the new balance (no row: no
    such account, or too little on it)."""
    return (
        update(Account)
        .where(Account.id == account_id, Account.balance >= amount)
        .values(balance=Account.balance - amount)
        .returning(Account.balance)
    )


@router.post("/atomic/accounts/{account_id}/withdrawals")
def withdraw_atomic(account_id: AccountId, amount: Amount, db: TransactionDep) -> AccountOut:
    balance = db.scalar(subtract(account_id, amount))
    if balance is None:  # no row matched: no such account, or too little on it
        found(db.get(Account, account_id), account_id)
        raise overdraft()
    return AccountOut(id=account_id, balance=balance)


@router.post("/locked/accounts/{account_id}/withdrawals")
def withdraw_locked(account_id: AccountId, amount: Amount, db: TransactionDep) -> AccountOut:
    # SELECT ... FOR UPDATE: another request's locking read of this row waits until we commit
    # (a plain SELECT does not wait: it reads the balance as last committed).
    account = found(db.get(Account, account_id, with_for_update=True), account_id)
    if account.balance < amount:
        raise overdraft()
    account.balance -= amount
    return AccountOut.model_validate(account)


@router.post("/versioned/accounts/{account_id}/withdrawals")
def withdraw_versioned(account_id: AccountId, amount: Amount, db: TransactionDep) -> AccountOut:
    account = found(db.get(VersionedAccount, account_id), account_id)
    if account.balance < amount:
        raise overdraft()
    account.balance -= amount
    try:
        db.flush()  # UPDATE ... WHERE id = ? AND version = ?: no row if it changed since we read
    except StaleDataError:
        raise HTTPException(
            status_code=409,
            detail="the account changed since it was read; retry",
            headers={"Retry-After": "0"},  # a conflict, not a refusal: trying again can work
        ) from None
    return AccountOut.model_validate(account)


def serialization_failure(exc: DBAPIError) -> bool:
    """The database refused the transaction because a concurrent one changed what it read:
    SQLSTATE 40001, whichever driver reports it (psycopg's `SerializationFailure`, asyncpg's
    `SerializationError`; SQLAlchemy wraps both, and keeps the code in ``orig.sqlstate``). The
    same transaction run again from its start can succeed."""
    return getattr(exc.orig, "sqlstate", None) == "40001"


@router.post("/serializable/accounts/{account_id}/withdrawals")
def withdraw_serializable(account_id: AccountId, amount: Amount, db: TransactionDep) -> AccountOut:
    # The transaction's first call, before any statement: it sets the level for this transaction
    # only (the pool resets it when the connection goes back).
    db.connection(execution_options={"isolation_level": "SERIALIZABLE"})
    account = found(db.get(Account, account_id), account_id)
    if account.balance < amount:
        raise overdraft()
    account.balance -= amount  # as the naive route: the database checks the read is still true
    try:
        db.flush()  # the UPDATE: refused if another transaction changed the row since we read it
    except DBAPIError as exc:
        if not serialization_failure(exc):
            raise
        raise HTTPException(
            status_code=409,
            detail="a concurrent transaction changed the account; retry",
            headers={"Retry-After": "0"},  # the transaction from its start again can succeed
        ) from None
    return AccountOut.model_validate(account)


@router.post("/atomic-commit/accounts/{account_id}/withdrawals")
def withdraw_atomic_commit(account_id: AccountId, amount: Amount, db: SessionDep) -> AccountOut:
    balance = db.scalar(subtract(account_id, amount))
    if balance is None:
        db.rollback()
        found(db.get(Account, account_id), account_id)
        raise overdraft()
    db.commit()  # at once: the row is locked from the UPDATE until here
    return AccountOut(id=account_id, balance=balance)


STRATEGIES = ("naive", "atomic", "locked", "versioned", "serializable")
"""The withdrawal routes' prefixes, from the one that loses updates to the four that do not (on
PostgreSQL)."""


def add_user_once(db: Session, name: str, email: str) -> User:
    """The user with `email`: added if there is none, else the one already there.

    Inserting first and catching the duplicate is safe against a concurrent request doing the
    same (a SELECT first could find nothing in both). The SAVEPOINT confines the failure: its
    rollback undoes the INSERT only, and the rest of the caller's transaction goes on.
    """
    try:
        with db.begin_nested():  # SAVEPOINT ... RELEASE SAVEPOINT, or ROLLBACK TO SAVEPOINT
            user = User(name=name, email=email)
            db.add(user)
        return user
    except IntegrityError:
        return db.scalars(select(User).where(User.email == email)).one()


def open_accounts(engine: Engine, balances: dict[str, int]) -> list[int]:
    """Create the lesson's table afresh on `engine` and one account per owner; their ids."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as db, db.begin():
        accounts = [Account(owner=owner, balance=cents) for owner, cents in balances.items()]
        db.add_all(accounts)
        db.flush()
        return [account.id for account in accounts]


def _in_transaction(SessionFactory: sessionmaker[Session]) -> Callable[[], Iterator[Session]]:
    def get() -> Iterator[Session]:
        with SessionFactory.begin() as session:
            yield session

    return get


def _in_async_transaction(
    SessionFactory: async_sessionmaker[AsyncSession],
) -> Callable[[], AsyncIterator[AsyncSession]]:
    async def get() -> AsyncIterator[AsyncSession]:
        async with SessionFactory.begin() as session:
            yield session

    return get


def transactions_app(
    database: SyncDatabase, async_database: AsyncDatabase | None = None, **lifespan: Any
) -> FastAPI:
    """The routes above on the lab's databases (``/async/...`` needs `async_database`).

    The shop app's error handlers answer a database that cannot serve (SQLite's "database is
    locked" past ``busy_timeout``, a full pool) with a 503. `lifespan`: `lesson_lifespan`'s
    options (``threads``).
    """
    app = FastAPI(title="Transactions", lifespan=lesson_lifespan(**lifespan))
    add_error_handlers(app)
    app.include_router(router)
    app.dependency_overrides[get_db] = database.get_db
    app.dependency_overrides[get_db_in_transaction] = _in_transaction(database.SessionLocal)
    if async_database is not None:
        app.dependency_overrides[get_async_db_in_transaction] = _in_async_transaction(
            async_database.AsyncSessionLocal
        )
    return app
