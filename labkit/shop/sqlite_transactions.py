"""SQLite transactions that begin where SQLAlchemy begins them (SQLAlchemy's pysqlite notes).

By default Python's sqlite3 (and aiosqlite, built on it) sends BEGIN only before an INSERT,
UPDATE or DELETE: a SELECT runs outside any transaction, and a SAVEPOINT sent first opens a
transaction of its own, so what its RELEASE keeps, an enclosing rollback cannot undo. Tests
that roll back one transaction per test rely on that rollback, so their engine needs this.

The app's own engine keeps the default: with real transactions, a transaction that read and
then writes fails with "database is locked" when another writes at the same time, instead of
waiting its turn.
"""

from typing import Any

from sqlalchemy import Connection, Engine, event


def begin_sqlite_transactions(engine: Engine) -> None:
    """The driver sends no BEGIN of its own; SQLAlchemy sends one where it begins a transaction.

    For an async engine (aiosqlite), pass its ``sync_engine``.
    """

    @event.listens_for(engine, "connect")
    def driver_sends_no_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def send_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")
