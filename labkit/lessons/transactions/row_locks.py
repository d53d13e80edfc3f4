"""Who waits for a row another transaction has locked: a plain read, or a locking one.

`reads_beside_a_lock` opens a transaction that locks one account the way the locked
withdrawal does (``SELECT ... FOR UPDATE``, then its ``UPDATE``) and keeps it open for
`hold_s`. Meanwhile two other sessions read the same balance: one with a plain ``SELECT``, one
with ``SELECT ... FOR UPDATE``. Each read's start and return are timed against the holder's
COMMIT, and its value is kept.

On PostgreSQL the plain read returns at once with the balance as it was before the holder's
change (it reads the last committed version of the row: MVCC, multiversion concurrency
control), while the locking read waits for the COMMIT and then returns the new balance. That
wait is what makes the locked withdrawal safe, and the plain read's not waiting is why a
withdrawal must lock its read, not only its write. SQLite has no ``FOR UPDATE``: SQLAlchemy
leaves it out, so both reads return at once with the old balance.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from labkit.instruments.sqllog import outline
from labkit.lessons.transactions.accounts import Account


@dataclass
class Read:
    """One read of the locked row, timed from the moment the holder had its lock."""

    sql: str
    """The statement sent, cut to its shape (``SELECT ... FROM accounts FOR UPDATE``)."""
    balance: int
    started_s: float
    returned_s: float


@dataclass
class LockedRow:
    """What `reads_beside_a_lock` saw: the balance before and after the holder's change, when
    the holder sent its COMMIT, and each read."""

    before: int
    after: int
    commit_s: float
    """When the holder sent its COMMIT, after taking its lock."""
    reads: dict[str, Read]
    """``"plain"`` and ``"for update"``."""

    def waited(self, read: str) -> bool:
        """The read returned only after the holder's COMMIT."""
        return self.reads[read].returned_s > self.commit_s


def _read(engine: Engine, account_id: int, for_update: bool, locked_at: float) -> Read:
    statement = select(Account.balance).where(Account.id == account_id)
    if for_update:
        statement = statement.with_for_update()
    sql = outline(str(statement.compile(dialect=engine.dialect)))  # as this database gets it
    with Session(engine) as db:
        started = time.perf_counter() - locked_at
        balance = db.scalar(statement)
        returned = time.perf_counter() - locked_at
        db.commit()
    return Read(sql, int(balance or 0), started, returned)


def reads_beside_a_lock(engine: Engine, account_id: int, hold_s: float) -> LockedRow:
    """Lock `account_id` and take a cent in a transaction kept open `hold_s`; meanwhile read its
    balance plainly and ``FOR UPDATE`` from two other sessions (on `engine`'s own connections)."""
    with Session(engine) as holder:
        account = holder.get(Account, account_id, with_for_update=True)
        if account is None:
            raise ValueError(f"no account with id {account_id}")
        before = account.balance
        account.balance -= 1
        holder.flush()  # the UPDATE: on SQLite, where no SELECT locks, this takes the write lock
        locked_at = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                name: pool.submit(_read, engine, account_id, for_update, locked_at)
                for name, for_update in (("plain", False), ("for update", True))
            }
            time.sleep(hold_s)
            commit_s = time.perf_counter() - locked_at
            holder.commit()
            reads = {name: future.result() for name, future in futures.items()}
    return LockedRow(before, before - 1, commit_s, reads)
