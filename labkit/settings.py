"""Where the lab's databases live, and the one way it prints a URL.

`DATABASE_URL` is read by the learner's app (labkit.shop.config), whose rules the lab reuses:
one variable, the sync and async drivers derived from it. Here: the lab's data folder, fresh
SQLite files for one notebook or experiment each, and `safe_url`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url

from labkit.shop.config import DEFAULT_SQLITE_FILE, async_url, database_url

DATA_DIR = DEFAULT_SQLITE_FILE.parent
"""The lab's data folder: the seed CSV files (committed) and SQLite files (created on demand)."""

__all__ = [
    "DATA_DIR",
    "async_url",
    "database_url",
    "ensure_sqlite_dir",
    "fresh_sqlite_url",
    "safe_url",
    "sqlite_url",
]


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


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked: the only form the lab ever prints or logs."""
    return make_url(url).render_as_string(hide_password=True)


def ensure_sqlite_dir(url: URL) -> None:
    """Create the folder of an SQLite file so a fresh checkout needs no setup step."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
