"""Where the lab's database lives: one environment variable, read in one place.

`DATABASE_URL` names the database the way a real FastAPI app is configured. When it is unset the
lab uses an SQLite file under ``data/``, so everything runs on a fresh machine with no server.
The async setup needs an async driver, so its URL is derived from the same variable instead of
being configured twice (and drifting apart).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""The lab's data folder: the seed CSV files (committed) and SQLite files (created on demand)."""

DEFAULT_SQLITE_FILE = DATA_DIR / "lab.db"

# The driver each setup uses, by database. The async setup's first driver is the default.
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
_ASYNC_DRIVERS = {
    "sqlite": ("sqlite+aiosqlite",),
    "postgresql": ("postgresql+asyncpg", "postgresql+psycopg_async"),
}


def sqlite_url(path: Path | str) -> URL:
    """The URL of an SQLite file (the file itself is created on first connect)."""
    return make_url(f"sqlite:///{Path(path)}")


def fresh_sqlite_url(name: str) -> URL:
    """A new, empty SQLite file ``data/NAME.db`` for one notebook or experiment.

    Any earlier file of that name (and its WAL side files) is removed first, so a notebook that
    runs twice, or after another, starts from the same state and shares nothing with the others.
    """
    path = DATA_DIR / f"{name}.db"
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return sqlite_url(path)


def configured_url(url: str | URL | None) -> URL:
    """The argument, else `DATABASE_URL`, else the default SQLite file, with the driver it names."""
    raw = url if url is not None else os.environ.get("DATABASE_URL")
    return make_url(raw) if raw is not None else sqlite_url(DEFAULT_SQLITE_FILE)


def database_url(url: str | URL | None = None) -> URL:
    """The sync URL to use: the argument, else `DATABASE_URL`, else the default SQLite file.

    The driver is always the lab's sync driver for that database (sqlite3, or psycopg 3 for
    PostgreSQL), whatever the URL names: one variable serves both setups, so
    ``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...`` work as well.
    """
    parsed = configured_url(url)
    backend = parsed.get_backend_name()
    if backend not in _SYNC_DRIVERS:
        raise ValueError(
            f"the lab supports SQLite and PostgreSQL, not {backend!r} "
            f"(DATABASE_URL={safe_url(parsed)})"
        )
    return parsed.set(drivername=_SYNC_DRIVERS[backend])


def async_url(url: str | URL | None = None) -> URL:
    """The same database as :func:`database_url`, through its asyncio driver.

    That is aiosqlite, or asyncpg for PostgreSQL, unless the URL names psycopg 3's own async
    mode (``postgresql+psycopg_async://``): then the async setup uses that.
    """
    given = configured_url(url)
    sync = database_url(given)
    drivers = _ASYNC_DRIVERS[sync.get_backend_name()]
    return sync.set(drivername=given.drivername if given.drivername in drivers else drivers[0])


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked: the only form the lab ever prints or logs."""
    return make_url(url).render_as_string(hide_password=True)


def ensure_sqlite_dir(url: URL) -> None:
    """Create the folder of an SQLite file so a fresh checkout needs no setup step."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
