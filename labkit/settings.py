"""The lab's own settings from the environment, where its databases live, and how it prints a URL.

`lab_settings()` is the one place outside the shop app that reads the environment: which
database `DATABASE_URL` names, whether PostgreSQL is required (``LAB_REQUIRE_POSTGRES``), what
JupyterHub tells a kernel, and what a server of the lab left for its worker processes. Every
other module asks it, so what the lab depends on is listed here and nowhere else.

`DATABASE_URL` is also read by the shop app (labkit.shop.config), whose rules the lab
reuses: one variable, the sync and async drivers derived from it. Here too: the lab's data
folder, a fresh SQLite file for one notebook or experiment each, and `safe_url`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from labkit.shop.config import DEFAULT_SQLITE_FILE, async_url, database_url

DATA_DIR = DEFAULT_SQLITE_FILE.parent
"""The lab's data folder: the seed CSV files (committed) and SQLite files (created on demand)."""

DATABASE_URL = "DATABASE_URL"
REQUIRE_POSTGRES = "LAB_REQUIRE_POSTGRES"
"""Set (as CI does) so that where no server is found, the tests and notebooks that need one fail
instead of being skipped."""
SERVE_OPTIONS = "LAB_SERVE_OPTIONS"
"""What a server of the lab (labkit.app.serve) leaves for its worker processes, as JSON: uvicorn
builds each worker's app from an import string, so nothing but the environment reaches them."""
HUB_PREFIX = "JUPYTERHUB_SERVICE_PREFIX"
"""Where JupyterHub (so Binder) tells a user's server, and its kernels, its base URL."""
HUB_TOKEN = "JUPYTERHUB_API_TOKEN"

__all__ = [
    "DATABASE_URL",
    "DATA_DIR",
    "HUB_PREFIX",
    "HUB_TOKEN",
    "REQUIRE_POSTGRES",
    "SERVE_OPTIONS",
    "LabSettings",
    "async_url",
    "database_url",
    "ensure_sqlite_dir",
    "fresh_sqlite_database",
    "lab_settings",
    "safe_url",
    "sqlite_url",
]


@dataclass(frozen=True)
class LabSettings:
    """What the environment tells the lab, each variable read once, by `lab_settings`."""

    database_url: str | None
    """`DATABASE_URL` as given (None: unset or empty)."""
    require_postgres: bool
    """``LAB_REQUIRE_POSTGRES`` is set: where no PostgreSQL (or PgBouncer) is found, fail."""
    serve_options: str | None
    """``LAB_SERVE_OPTIONS``: the JSON a server of the lab left for its workers."""
    hub_prefix: str | None
    """``JUPYTERHUB_SERVICE_PREFIX``: this kernel's server runs under JupyterHub, at this path."""
    hub_token: str
    """``JUPYTERHUB_API_TOKEN`` (empty where none)."""

    @property
    def backend(self) -> str:
        """``postgresql`` where `database_url` names a PostgreSQL database, else ``sqlite``."""
        if self.database_url and make_url(self.database_url).get_backend_name() == "postgresql":
            return "postgresql"
        return "sqlite"


def lab_settings() -> LabSettings:
    """The lab's settings as the environment has them now.

    Read afresh on each call, not at import: a notebook or a test may set a variable in the
    process before asking.
    """
    environ = os.environ
    return LabSettings(
        database_url=environ.get(DATABASE_URL) or None,
        require_postgres=bool(environ.get(REQUIRE_POSTGRES)),
        serve_options=environ.get(SERVE_OPTIONS) or None,
        hub_prefix=environ.get(HUB_PREFIX) or None,
        hub_token=environ.get(HUB_TOKEN, ""),
    )


def sqlite_url(path: Path | str) -> URL:
    """The URL of an SQLite file (the file itself is created on first connect)."""
    return make_url(f"sqlite:///{Path(path)}")


def fresh_sqlite_database(name: str) -> URL:
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
