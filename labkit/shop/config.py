"""Where the database is: one environment variable, read in one place, as a deployed app reads it.

`DATABASE_URL` names the database. When it is unset the app uses an SQLite file under ``data/``,
so it runs on a fresh machine with no server. The async setup needs an async driver, so its URL
is derived from the same variable instead of being configured twice (and drifting apart).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url

DEFAULT_SQLITE_FILE = Path(__file__).resolve().parents[2] / "data" / "lab.db"

# The driver each setup uses, by database. The async setup's first driver is the default.
SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
ASYNC_DRIVERS = {
    "sqlite": ("sqlite+aiosqlite",),
    "postgresql": ("postgresql+asyncpg", "postgresql+psycopg_async"),
}


def configured_url(url: str | URL | None = None) -> URL:
    """The argument, else `DATABASE_URL`, else the default SQLite file, with the driver it names."""
    raw = url if url is not None else os.environ.get("DATABASE_URL")
    return make_url(raw) if raw is not None else make_url(f"sqlite:///{DEFAULT_SQLITE_FILE}")


def database_url(url: str | URL | None = None) -> URL:
    """The sync URL to use: the argument, else `DATABASE_URL`, else the default SQLite file.

    The driver is always the sync driver for that database (sqlite3, or psycopg 3 for
    PostgreSQL), whatever the URL names: one variable serves both setups, so
    ``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...`` work as well.
    """
    parsed = configured_url(url)
    backend = parsed.get_backend_name()
    if backend not in SYNC_DRIVERS:
        shown = parsed.render_as_string(hide_password=True)
        raise ValueError(f"SQLite and PostgreSQL are supported, not {backend!r} ({shown})")
    return parsed.set(drivername=SYNC_DRIVERS[backend])


def async_url(url: str | URL | None = None) -> URL:
    """The same database as :func:`database_url`, through its asyncio driver.

    That is aiosqlite, or asyncpg for PostgreSQL, unless the URL names psycopg 3's own async
    mode (``postgresql+psycopg_async://``): then the async setup uses that.
    """
    given = configured_url(url)
    sync = database_url(given)
    drivers = ASYNC_DRIVERS[sync.get_backend_name()]
    return sync.set(drivername=given.drivername if given.drivername in drivers else drivers[0])
