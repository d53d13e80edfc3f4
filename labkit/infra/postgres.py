"""Finding a PostgreSQL server for the lab, and giving each experiment a database of its own.

SQLite needs nothing; PostgreSQL needs a server. `find_server()` looks where your server is
likely to be, in this order, and says why when it finds none:

1. `DATABASE_URL`, when it names a PostgreSQL database;
2. a server on 127.0.0.1:5432 that lets user ``postgres`` in (a local install, a CI service);
3. PostgreSQL's own programs (``initdb``, ``pg_ctl``), as Debian and Binder's ``apt.txt`` install
   them: a throwaway server in a temporary folder on a free loopback port, stopped at exit.

Experiments never touch the database they found: `fresh_postgres_database()` creates a new one
beside it (`throwaway_database()`: with a random name, dropped after the block), so runs never
see each other's rows.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import psycopg
from sqlalchemy.engine import URL, make_url

from labkit.infra.ports import free_port
from labkit.infra.reaper import cancel, when_this_process_ends
from labkit.settings import database_url, lab_settings, safe_url

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_GET_ONE = (
    "To run the PostgreSQL parts: set DATABASE_URL=postgresql://USER:PASSWORD@HOST:PORT/DB, "
    "or start a local server on 127.0.0.1:5432 that trusts user postgres, "
    "or install PostgreSQL's programs (Debian: apt-get install postgresql) "
    "and run as a non-root user."
)


class NoPostgres(RuntimeError):
    """No PostgreSQL server could be found or started; the message says why and what to do."""


@dataclass(frozen=True)
class PostgresServer:
    """A server the lab may create databases on, and where it came from."""

    url: URL
    """A database on the server to connect to for ``CREATE DATABASE`` (never used for data)."""
    origin: str
    pid: int | None = None
    """The server's main process (the postmaster), where the lab started the server itself."""

    def __str__(self) -> str:
        return f"PostgreSQL at {safe_url(self.url)} ({self.origin})"


def libpq_url(url: URL) -> str:
    """The URL as psycopg's own connection string (no SQLAlchemy driver name)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _answers(url: URL) -> str | None:
    """None if a connection to `url` works, else the reason it does not (password masked)."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if url.password:
            reason = reason.replace(url.password, "***")
        return reason


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, if PostgreSQL's programs are installed."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):  # Debian's layout
        if Path(folder, "pg_ctl").exists() and Path(folder, "initdb").exists():
            return Path(folder)
    return None


def run_as_user(user: str | None) -> dict[str, Any]:
    """`subprocess` arguments that run a program as `user` (and its group only), or as we are."""
    if user is None:
        return {}
    if os.geteuid() != 0:
        raise NoPostgres(f"only root can run PostgreSQL's programs as user {user!r}")
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise NoPostgres(f"there is no user {user!r} to run PostgreSQL as") from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _run(command: list[Any], **options: Any) -> None:
    """Run one of PostgreSQL's programs; `NoPostgres` with its own complaint if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, **options)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise NoPostgres(f"{Path(command[0]).name} failed: {said[-1]}")


def start_throwaway_server(
    binaries: Path, user: str | None = None, settings: Mapping[str, object] | None = None
) -> PostgresServer:
    """Start a private server in a temporary folder on a free loopback port, stopped when this
    process ends, however it ends (labkit.infra.reaper).

    PostgreSQL refuses to run as root (a server bug must not own the machine), so this does too,
    unless root names another `user` (``"nobody"``, say) for PostgreSQL's programs to run as.
    Only those programs run as `user`, in a folder it owns, so they need nothing of this
    process's (its Python, its packages); this process connects to the server as any client.
    `settings` are server settings (``{"max_connections": 12}``), as ``postgres -c`` takes them.
    """
    server, _stop = _start(binaries, user, settings or {}, "stopped at exit")
    return server


@contextmanager
def throwaway_server(**settings: object) -> Iterator[PostgresServer]:
    """A private server with these settings for the block, stopped and removed afterwards.

    For a lesson that needs a server of its own (a small ``max_connections``, say) beside the
    one `find_server` found. Run by root, PostgreSQL's programs run as user ``postgres``, as
    Debian's package runs them. `NoPostgres` says why where none can be started.
    """
    binaries = postgres_binaries()
    if binaries is None:
        raise NoPostgres(
            "a throwaway server needs PostgreSQL's programs (initdb, pg_ctl), which are not "
            "installed (Debian: apt-get install postgresql)"
        )
    user = "postgres" if os.geteuid() == 0 else None
    server, stop = _start(binaries, user, settings, "stopped when the block ends")
    try:
        yield server
    finally:
        stop()


class _Stopping(TypedDict):
    """`stop_throwaway_server`'s arguments: JSON, for the reaper to call it with too."""

    pg_ctl: str
    folder: str
    user: str | None


def _start(
    binaries: Path, user: str | None, settings: Mapping[str, object], stopped: str
) -> tuple[PostgresServer, Callable[[], None]]:
    """`start_throwaway_server`'s work: the server, and what stops it and removes its folder
    now. Until that is called, the server is stopped when this process ends, however it ends
    (a block left open, a notebook's kernel killed)."""
    if user is None and os.geteuid() == 0:
        raise NoPostgres(
            "PostgreSQL will not run as root, so no throwaway server can be started "
            "(root may start one as another user: start_throwaway_server(binaries, user=...))"
        )
    as_user = run_as_user(user)  # before the folder: a refusal leaves nothing behind
    folder = Path(tempfile.mkdtemp(prefix="lab-postgres-"))
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    # In the folder: `user` may not be allowed into this process's working directory.
    run_as = {**as_user, "cwd": folder}
    data, port = folder / "data", free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    options += "".join(f" -c {name}={value}" for name, value in settings.items())

    stopping: _Stopping = {"pg_ctl": str(binaries / "pg_ctl"), "folder": str(folder), "user": user}
    key = f"stop {folder}"

    def stop() -> None:
        cancel(key)
        stop_throwaway_server(**stopping)

    when_this_process_ends(key, stop_throwaway_server, **stopping)
    try:
        _run(
            [binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"],
            **run_as,
        )
        _run(
            [
                binaries / "pg_ctl",
                "-D",
                data,
                "-o",
                options,
                "-l",
                folder / "server.log",
                "-w",
                "start",
            ],
            **run_as,
        )
    except BaseException:
        stop()
        raise
    url = make_url(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    origin = f"throwaway server started from {binaries}"
    if user is not None:
        origin += f" as user {user}"
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return PostgresServer(url, f"{origin}, {stopped}", pid), stop


def stop_throwaway_server(pg_ctl: str, folder: str, user: str | None) -> None:
    """Stop the throwaway server in `folder` at once, and remove the folder."""
    stop: list[str | Path] = [pg_ctl, "-D", Path(folder) / "data", "-m", "immediate", "stop"]
    subprocess.run(stop, capture_output=True, check=False, cwd=folder, **run_as_user(user))
    shutil.rmtree(folder, ignore_errors=True)


_found: PostgresServer | None = None


def find_server() -> PostgresServer:
    """The first PostgreSQL server that answers, in the order above; `NoPostgres` if none does.

    The answer is kept for the life of the process, so a throwaway server is started only once.
    """
    global _found
    if _found is not None:
        return _found
    settings = lab_settings()
    if settings.backend == "postgresql":
        url = database_url(settings.database_url)
        reason = _answers(url)
        if reason is not None:
            raise NoPostgres(f"DATABASE_URL={safe_url(url)} does not answer: {reason}")
        _found = PostgresServer(url, "from DATABASE_URL")
        return _found
    reasons = []
    local = database_url(LOCAL_URL)
    reason = _answers(local)
    if reason is None:
        _found = PostgresServer(local, "local server on 127.0.0.1:5432")
        return _found
    reasons.append(f"nothing usable on 127.0.0.1:5432 ({reason})")
    binaries = postgres_binaries()
    if binaries is None:
        reasons.append("PostgreSQL's programs (initdb, pg_ctl) are not installed")
    else:
        try:
            _found = start_throwaway_server(binaries)
            return _found
        except (NoPostgres, subprocess.CalledProcessError, OSError) as exc:
            reasons.append(f"no throwaway server: {exc}")
    raise NoPostgres("No PostgreSQL server found: " + "; ".join(reasons) + ". " + HOW_TO_GET_ONE)


def server_if_any() -> tuple[PostgresServer | None, str]:
    """`find_server()`'s server and where it was found, or None and why there is none: for a
    lesson whose PostgreSQL parts are optional. Under LAB_REQUIRE_POSTGRES, none is an error."""
    try:
        server = find_server()
    except NoPostgres as exc:
        if lab_settings().require_postgres:
            raise
        return None, str(exc)
    return server, str(server)


def run_admin(server: PostgresServer, sql: str) -> None:
    """Run one statement on `server`'s admin database, outside a transaction.

    ``CREATE DATABASE`` and ``DROP DATABASE`` cannot run inside one. The SQL is the lab's own
    (database names it chose), never user input.
    """
    with psycopg.connect(libpq_url(server.url), autocommit=True) as conn:
        conn.execute(sql)


def fresh_postgres_database(server: PostgresServer, name: str) -> URL:
    """An empty database `name` on `server`: any earlier one of that name is dropped first.

    The PostgreSQL counterpart of `settings.fresh_sqlite_database`: a notebook that runs again,
    or after another, starts from the same state. Drop it at the end with `drop_database`.
    """
    drop_database(server, name)
    run_admin(server, f'CREATE DATABASE "{name}"')
    return server.url.set(database=name)


def drop_database(server: PostgresServer, name: str) -> None:
    """Drop database `name` on `server` if it exists, ending any session still connected to it."""
    run_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def throwaway_database(server: PostgresServer, prefix: str = "lab") -> Iterator[URL]:
    """A new database with a random name on `server` for the block; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        yield fresh_postgres_database(server, name)
    finally:
        drop_database(server, name)


@dataclass
class ServerConnections:
    """Connections to one database as the server counts them (``pg_stat_activity``), sampled."""

    samples: list[int]
    peak_by_name: dict[str, int] = field(default_factory=dict)
    """The most connections seen at once from each ``application_name`` (each worker process
    of the lab's ``serve`` names its own)."""

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


@contextmanager
def watch_server_connections(
    server: PostgresServer, database: str, every_s: float = 0.005
) -> Iterator[ServerConnections]:
    """Sample how many connections `database` has, from the server's side, during the block.

    The pool's own counters say what the app believes; ``pg_stat_activity`` is what the server
    actually holds open (and what a DBA's ``max_connections`` is spent on). Sampling runs on a
    thread of its own, so a blocked event loop cannot pause it.
    """
    seen = ServerConnections(samples=[])
    stop = threading.Event()
    query = (
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY application_name"
    )

    # Connected before the block starts: a server at its limit would refuse a sampler that
    # connected once the block's load had begun, and nothing would be counted.
    conn = psycopg.connect(libpq_url(server.url), autocommit=True)

    def sample() -> None:
        with conn:
            while True:
                counts: dict[str, int] = dict(conn.execute(query, (database,)).fetchall())
                seen.samples.append(sum(counts.values()))
                for name, count in counts.items():
                    seen.peak_by_name[name] = max(count, seen.peak_by_name.get(name, 0))
                if stop.wait(every_s):
                    return

    sampler = threading.Thread(target=sample, name="pg_stat_activity sampler", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join()
