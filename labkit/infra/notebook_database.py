"""A fresh database for each notebook, on the database `DATABASE_URL` selects.

Every notebook starts with ``url = fresh_database("NN_name")`` and prints `describe_database(url)`:

- `DATABASE_URL` unset (or naming SQLite): a new file ``data/NN_name.db``;
- `DATABASE_URL` naming PostgreSQL: a new database ``lab_NN_name`` on that server, so the
  lessons run on the database an app ships with, and never touch the data of the database the
  variable names. It is dropped when the kernel ends, however it ends.

Either way, an earlier database of that name is removed first: a notebook run twice, or after
another, starts from the same state, and a kernel killed before it could drop its database
leaves nothing the next run sees. A lesson about one database on purpose (SQLite's
``check_same_thread``, PostgreSQL's pools) names it: ``fresh_database(name, "postgresql")``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url

from labkit.infra.postgres import (
    PostgresServer,
    drop_database,
    find_server,
    fresh_postgres_database,
)
from labkit.infra.reaper import when_this_process_ends
from labkit.settings import DATA_DIR, fresh_sqlite_database, lab_settings

BACKENDS = ("sqlite", "postgresql")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

__all__ = ["BACKENDS", "describe_database", "fresh_database", "selected_backend"]


def selected_backend() -> str:
    """The backend `DATABASE_URL` selects: ``postgresql`` for a PostgreSQL URL, else ``sqlite``."""
    return lab_settings().backend


def fresh_database(name: str, backend: str | None = None) -> URL:
    """A new, empty database for one notebook: on `backend`, else the one `DATABASE_URL` selects.

    On PostgreSQL the server is `find_server()`'s (the one `DATABASE_URL` names, when it names
    one), and `labkit.infra.postgres.NoPostgres` says why when there is none.
    """
    backend = backend or selected_backend()
    if backend == "sqlite":
        return fresh_sqlite_database(name)
    if backend != "postgresql":
        raise ValueError(f"no backend {backend!r}: one of {BACKENDS}")
    server = find_server()
    database = f"lab_{name}"
    url = fresh_postgres_database(server, database)
    _drop_when_done(server, database)
    return url


def _drop_when_done(server: PostgresServer, database: str) -> None:
    """Drop `database` when this process ends, however it ends (killed kernels included: see
    labkit.infra.reaper), once however often the notebook runs."""
    url = server.url.render_as_string(hide_password=False)
    when_this_process_ends(f"drop {url} {database}", drop_later, server=url, database=database)


def drop_later(server: str, database: str) -> None:
    """Drop `database` on `server` (a URL), for a process that has ended."""
    drop_database(PostgresServer(make_url(server), "the server of an ended kernel"), database)


def describe_database(url: URL, *, fixed: bool = False) -> str:
    """One line for a notebook's top: which database this run uses and why, the password masked.

    `fixed`: the lesson is about this database and uses it whatever `DATABASE_URL` says.
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = Path(url.database or ":memory:")
        where = path.relative_to(DATA_DIR.parent) if path.is_relative_to(DATA_DIR.parent) else path
        what = f"SQLite: {where}, a new file"
        why = "set DATABASE_URL to a PostgreSQL URL to run it on PostgreSQL"
    else:
        server = f"{url.username}@{url.host}:{url.port or 5432}"
        what = f"PostgreSQL: database {url.database} on {server}, dropped when the kernel exits"
        why = "DATABASE_URL names this server; unset it to run on SQLite"
    if fixed:
        why = f"this lesson is about {NAMES[backend]}, whatever DATABASE_URL says"
    return f"This run uses {what} ({why})."
