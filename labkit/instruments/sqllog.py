"""See the SQL a block of code sends: how the lab proves "`.get()` twice is one query".

`capture_sql(engine)` listens on the engine's ``before_cursor_execute`` event for the length of a
``with`` block and keeps each statement with its parameters. It works for an `AsyncEngine` too
(through its ``sync_engine``, where SQLAlchemy's events live), and ``capture_sql(None)`` records
every engine in the process (a class-level listener on `Engine`). The simulated-latency wait runs
on the raw cursor, below this event, so it never appears in a capture.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from labkit.instruments.events import Listener, listening

PLACEHOLDER = re.compile(r"\?|%\(\w+\)s|\$\d+")
"""A bound parameter as each driver takes it: ``?`` (sqlite3), ``%(name)s`` (psycopg), ``$1``
(asyncpg); on PostgreSQL SQLAlchemy may add a cast after it (``::VARCHAR``)."""
CAST = re.compile(r"::[A-Z]+(\[\])?")


def driver_neutral(statement: str) -> str:
    """The statement on one line with every placeholder written ``?`` and no casts after them:
    the same query sent through two drivers compares equal."""
    return CAST.sub("", PLACEHOLDER.sub("?", " ".join(statement.split())))


_TABLE_AFTER = re.compile(r"^(INSERT INTO|UPDATE|DELETE FROM) (\w+)", re.IGNORECASE)
_FROM = re.compile(r"\bFROM (\w+)", re.IGNORECASE)
_FOR_UPDATE = re.compile(r"\bFOR UPDATE\b", re.IGNORECASE)


def outline(statement: str) -> str:
    """`statement` as `StatementLog.outline` writes it."""
    text = " ".join(statement.split())
    if match := _TABLE_AFTER.match(text):
        return f"{match[1].upper()} {match[2]}"
    if text.upper().startswith("SELECT") and (table := _FROM.search(text)):
        locking = " FOR UPDATE" if _FOR_UPDATE.search(text) else ""
        return f"SELECT ... FROM {table[1]}{locking}"
    return text


@dataclass
class StatementLog:
    """The statements one block sent, in order, each with its bound parameters."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        return [statement for statement, _ in self.entries]

    def values(self, index: int) -> tuple[Any, ...]:
        """Statement `index`'s parameter values in order, whichever style the driver takes them
        in: a tuple (sqlite3, asyncpg) or a dict by name, in the statement's order (psycopg)."""
        parameters = self.entries[index][1]
        return tuple(parameters.values()) if isinstance(parameters, dict) else tuple(parameters)

    def __len__(self) -> int:
        return len(self.entries)

    def outline(self) -> list[str]:
        """Each statement cut to what it does and to which table (``UPDATE accounts``,
        ``SELECT ... FROM users``), and the transactions' ends: the same on every driver, where
        the full text differs in placeholders, casts and ``RETURNING``."""
        return [outline(statement) for statement in self.statements]

    def show(self) -> None:
        """Print each statement on one line, then its parameters: what a reader reads."""
        for statement, parameters in self.entries:
            print(" ".join(statement.split()))
            if parameters is not None:  # None: a transaction's begin or end
                print(f"    parameters: {parameters!r}")


def engine_target(engine: Engine | AsyncEngine | None) -> Engine | type[Engine]:
    """Where an engine's events are listened for: a sync engine, an async engine's sync engine,
    or, for None, the `Engine` class itself (every engine, existing or future)."""
    if engine is None:
        return Engine
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


TRANSACTION_EVENTS = {"begin": "BEGIN (implicit)", "commit": "COMMIT", "rollback": "ROLLBACK"}
"""How a capture with ``transactions=True`` writes where a transaction begins and ends. COMMIT
and ROLLBACK are driver calls, not statements; "BEGIN (implicit)" (as SQLAlchemy's own echo
writes it) is where SQLAlchemy begins one, and the driver sends its BEGIN with the first
statement (sqlite3: with the first INSERT, UPDATE or DELETE)."""


@contextmanager
def capture_sql(
    engine: Engine | AsyncEngine | None, *, transactions: bool = False
) -> Iterator[StatementLog]:
    """Record every statement `engine` (None: any engine) executes inside the block; with
    `transactions`, also where each transaction begins, commits and rolls back."""
    target = engine_target(engine)
    log = StatementLog()

    def record(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        log.entries.append((statement, parameters))

    def marker(event: str) -> Callable[[Any], None]:
        return lambda _conn: log.entries.append((TRANSACTION_EVENTS[event], None))

    listeners: list[Listener] = [(target, "before_cursor_execute", record)]
    if transactions:
        listeners += [(target, event, marker(event)) for event in TRANSACTION_EVENTS]
    with listening(listeners):
        yield log
