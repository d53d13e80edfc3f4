"""What an isolation level does to a read-modify-write that another transaction overtook.

`second_writer` runs the lost update of the naive withdrawal one step at a time, on one thread,
so that its outcome does not depend on timing: two transactions read the same balance, the first
takes a cent and commits, then the second takes a cent from the balance it read and commits.
Under PostgreSQL's default (``READ COMMITTED``) the second write goes through and one cent of the
two is taken: an update is lost. Under ``REPEATABLE READ`` or ``SERIALIZABLE`` the database
refuses the second write instead (a serialization failure, SQLSTATE 40001); nothing is lost,
and the refused transaction can be run again. SQLite reports ``SERIALIZABLE`` whatever is asked,
yet loses the update when sqlite3 runs the read outside any transaction (its default); with a
real ``BEGIN`` it refuses the second write with "database is locked" (``SQLITE_BUSY_SNAPSHOT``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from labkit.lessons.transactions.accounts import Account


@dataclass
class SecondWriter:
    """What the second of two read-modify-writes of one balance got."""

    asked: str | None
    """The isolation level asked for (None: the engine's default)."""
    in_effect: str
    """The level the database connection reported inside the second transaction."""
    error: str | None
    """The second commit's error (`describe_error`), None if it committed."""
    sqlstate: str | None
    """The driver's SQLSTATE for that error, where it gives one (PostgreSQL's drivers)."""
    before: int
    after: int

    @property
    def committed(self) -> int:
        """Withdrawals that committed: each was answered "done", and each promised one cent."""
        return 1 if self.error else 2

    @property
    def lost(self) -> int:
        """Committed withdrawals whose cent is still on the balance."""
        return self.committed - (self.before - self.after)


def describe_error(exc: DBAPIError) -> str:
    """One line: SQLAlchemy's class, the driver's, its code, and the first line of its message."""
    driver_error = exc.orig
    code = getattr(driver_error, "sqlstate", None) or getattr(
        driver_error, "sqlite_errorname", None
    )
    message = str(driver_error).splitlines()[0]
    return f"{type(exc).__name__} ({type(driver_error).__name__}, {code}): {message}"


def second_writer(
    engine: Engine, account_id: int, isolation_level: str | None = None
) -> SecondWriter:
    """Two sessions read `account_id`'s balance; the first takes a cent and commits; then the
    second takes a cent from the balance it read and commits, or is refused. Each transaction
    runs at `isolation_level` (None: the engine's default)."""
    options = {"isolation_level": isolation_level} if isolation_level else {}
    with Session(engine) as first, Session(engine) as second:
        for session in (first, second):
            session.connection(execution_options=options)  # before any statement
        in_effect = second.connection().get_isolation_level()
        mine, theirs = first.get(Account, account_id), second.get(Account, account_id)
        if mine is None or theirs is None:
            raise ValueError(f"no account with id {account_id}")
        before = theirs.balance
        mine.balance -= 1
        first.commit()
        theirs.balance -= 1  # from the balance this transaction read, as the naive route does
        error = sqlstate = None
        try:
            second.commit()
        except DBAPIError as exc:
            error, sqlstate = describe_error(exc), getattr(exc.orig, "sqlstate", None)
            second.rollback()
    with Session(engine) as db:
        after = db.get_one(Account, account_id).balance
    return SecondWriter(isolation_level, in_effect, error, sqlstate, before, after)
