"""See the SQL a block of code sends: how the lab proves "`.get()` twice is one query".

`capture_sql(engine)` listens on the engine's ``before_cursor_execute`` event for the length of a
``with`` block and keeps each statement with its parameters. It works for an `AsyncEngine` too
(through its ``sync_engine``, where SQLAlchemy's events live), and ``capture_sql(None)`` records
every engine in the process (a class-level listener on `Engine`). The simulated-latency wait runs
on the raw cursor, below this event, so it never appears in a capture.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from .events import listening

PLACEHOLDER = re.compile(r"\?|%\(\w+\)s|\$\d+")
"""A bound parameter as each driver takes it: ``?`` (sqlite3), ``%(name)s`` (psycopg), ``$1``
(asyncpg); on PostgreSQL SQLAlchemy may add a cast after it (``::VARCHAR``)."""
CAST = re.compile(r"::[A-Z]+(\[\])?")


def driver_neutral(statement: str) -> str:
    """The statement on one line with every placeholder written ``?`` and no casts after them:
    the same query sent through two drivers compares equal."""
    return CAST.sub("", PLACEHOLDER.sub("?", " ".join(statement.split())))


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

    def show(self) -> None:
        """Print each statement on one line, then its parameters: what a learner reads."""
        for statement, parameters in self.entries:
            print(" ".join(statement.split()))
            print(f"    parameters: {parameters!r}")


def engine_target(engine: Engine | AsyncEngine | None) -> Engine | type[Engine]:
    """Where an engine's events are listened for: a sync engine, an async engine's sync engine,
    or, for None, the `Engine` class itself (every engine, existing or future)."""
    if engine is None:
        return Engine
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


@contextmanager
def capture_sql(engine: Engine | AsyncEngine | None) -> Iterator[StatementLog]:
    """Record every statement `engine` (None: any engine) executes inside the block."""
    target = engine_target(engine)
    log = StatementLog()

    def record(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        log.entries.append((statement, parameters))

    with listening([(target, "before_cursor_execute", record)]):
        yield log
