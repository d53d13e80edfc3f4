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

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from .servers.postgres import PostgresServer, drop_database, find_server, fresh_postgres_database
from .settings import DATA_DIR, fresh_sqlite_url

BACKENDS = ("sqlite", "postgresql")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

__all__ = ["BACKENDS", "describe_database", "fresh_database", "selected_backend"]


def selected_backend() -> str:
    """The backend `DATABASE_URL` selects: ``postgresql`` for a PostgreSQL URL, else ``sqlite``."""
    url = os.environ.get("DATABASE_URL")
    if url and make_url(url).get_backend_name() == "postgresql":
        return "postgresql"
    return "sqlite"


def fresh_database(name: str, backend: str | None = None) -> URL:
    """A new, empty database for one notebook: on `backend`, else the one `DATABASE_URL` selects.

    On PostgreSQL the server is `find_server()`'s (the one `DATABASE_URL` names, when it names
    one), and `labkit.servers.postgres.NoPostgres` says why when there is none.
    """
    backend = backend or selected_backend()
    if backend == "sqlite":
        return fresh_sqlite_url(name)
    if backend != "postgresql":
        raise ValueError(f"no backend {backend!r}: one of {BACKENDS}")
    server = find_server()
    database = f"lab_{name}"
    url = fresh_postgres_database(server, database)
    _drop_when_done(server, database)
    return url


DROPPER = (
    "import sys; job = sys.stdin.readline(); sys.stdin.read(); "
    f"from {__name__} import drop_job; drop_job(job)"
)
"""The program of `_drop_when_done`'s process: read the job, wait for the end of stdin (when the
process that started it has ended), and only then import labkit, so it costs a running kernel
no CPU."""

_droppers: dict[tuple[str, str], subprocess.Popen[bytes]] = {}


def _drop_when_done(server: PostgresServer, database: str) -> None:
    """Drop `database` when this process ends (once, however often the notebook runs).

    Exit handlers are not enough: a kernel is often killed rather than asked to exit (nbval
    kills its kernels; so does Jupyter's "kill"), and a killed process runs none. So a small
    process of its own (`DROPPER`), in a session of its own (a kernel is killed with its process
    group), waits on a pipe only this process holds open. When this process ends, however it
    ends, the pipe closes and that process drops the database. The server's URL goes through
    the pipe, not the command line, where `ps` would show its password.
    """
    key = (str(server.url), database)
    if key in _droppers:
        return
    dropper = subprocess.Popen(
        [sys.executable, "-c", DROPPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert dropper.stdin is not None
    job = {"server": server.url.render_as_string(hide_password=False), "database": database}
    dropper.stdin.write(json.dumps(job).encode() + b"\n")
    dropper.stdin.flush()
    _droppers[key] = dropper  # holds the pipe open for as long as this process lives


def drop_job(job: str) -> None:
    """Drop the database a `_drop_when_done` job names (a line of JSON: server URL, database)."""
    where = json.loads(job)
    server = PostgresServer(make_url(where["server"]), "the server of an ended kernel")
    drop_database(server, where["database"])


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
