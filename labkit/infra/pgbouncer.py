"""PgBouncer in front of a PostgreSQL server: the lab starts its own, on a free loopback port.

Every app process keeps a pool of its own, so N workers can ask the server for N pools' worth
of connections. PgBouncer takes all of those client connections and lends them a few server
connections: in ``transaction`` mode a client holds a server connection only while one of its
transactions runs, so between transactions its next statement may go to another one.

`pgbouncer()` writes a config (transaction pooling, a small server pool, no password: the
lab's servers trust loopback), starts Debian's ``pgbouncer`` with it and stops it when the
block ends. Where the program is missing, `NoPgBouncer` says how to get it. What a driver
must not do behind it (rely on prepared statements) is turned off by
`labkit.app.databases.without_prepared_statements`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from labkit.infra.ports import free_port
from labkit.infra.postgres import PostgresServer, run_as_user
from labkit.infra.reaper import cancel, terminate, when_this_process_ends
from labkit.settings import lab_settings

HOW_TO_GET_IT = "install it (Debian: apt-get install pgbouncer; Binder: apt.txt lists it)"


class NoPgBouncer(RuntimeError):
    """PgBouncer is not installed, or would not start; the message says why."""


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where clients connect, and how it pools."""

    port: int
    pool_size: int
    pool_mode: str
    version: str

    def url(self, database: URL) -> URL:
        """`database` (a URL on the server behind PgBouncer) reached through PgBouncer."""
        return database.set(host="127.0.0.1", port=self.port)

    def setting(self, name: str) -> str | None:
        """PgBouncer's value of setting `name` now, from its admin console (``SHOW CONFIG``);
        None if this version has no such setting (``max_prepared_statements`` before 1.21).
        With ``auth_type = any`` the console lets any user in."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, dbname="pgbouncer", user="pgbouncer",
            autocommit=True,
        ) as console:  # fmt: skip
            rows = console.execute("SHOW CONFIG").fetchall()  # no parameters: a simple query
        return next((str(row[1]) for row in rows if row[0] == name), None)

    def __str__(self) -> str:
        return (
            f"{self.version} on 127.0.0.1:{self.port}: {self.pool_mode} pooling, "
            f"{self.pool_size} server connections per database"
        )


def pgbouncer_program() -> str:
    """The ``pgbouncer`` program's path; `NoPgBouncer` if it is not installed."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
    )
    if found is None:
        raise NoPgBouncer(f"the pgbouncer program is not installed: {HOW_TO_GET_IT}")
    return found


def pgbouncer_if_any() -> tuple[str | None, str]:
    """The program, or None and why not; under LAB_REQUIRE_POSTGRES (CI), a missing PgBouncer
    is an error, as a missing server is."""
    try:
        return pgbouncer_program(), "found"
    except NoPgBouncer as exc:
        if lab_settings().require_postgres:
            raise
        return None, str(exc)


CONFIG = """\
[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = any
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
{more}"""


@contextmanager
def pgbouncer(
    server: PostgresServer,
    *,
    pool_size: int = 2,
    pool_mode: str = "transaction",
    max_client_conn: int = 1000,
    settings: Mapping[str, str | int] | None = None,
) -> Iterator[PgBouncer]:
    """PgBouncer in front of `server` for the block: every database on it, `pool_size` server
    connections each, as the server's user (``auth_type = any``: the lab's servers trust
    loopback). Run by root, PgBouncer runs as user ``postgres``, since it refuses root.

    `settings` adds lines to the ``[pgbouncer]`` section, e.g.
    ``{"server_reset_query_always": 1}``; `PgBouncer.setting` reads them back."""
    program = pgbouncer_program()
    as_user = run_as_user("postgres" if os.geteuid() == 0 else None)
    if server.url.password:
        raise NoPgBouncer(
            "the lab's PgBouncer logs in without a password: use a server that "
            "trusts loopback (find_server's local or throwaway server)"
        )
    folder = Path(tempfile.mkdtemp(prefix="lab-pgbouncer-"))
    try:
        more = "".join(f"{name} = {value}\n" for name, value in (settings or {}).items())
        with _running(
            program, folder, as_user, server, pool_size, pool_mode, max_client_conn, more
        ) as (port, version):
            yield PgBouncer(port, pool_size, pool_mode, version)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _running(
    program: str,
    folder: Path,
    as_user: dict[str, Any],
    server: PostgresServer,
    pool_size: int,
    pool_mode: str,
    max_client_conn: int,
    more: str = "",
) -> Iterator[tuple[int, str]]:
    """Write the config into `folder`, start PgBouncer, yield its port and version, stop it."""
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    port = free_port()
    version = subprocess.run(
        [program, "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout.partition("\n")[0]
    config = folder / "pgbouncer.ini"
    config.write_text(
        CONFIG.format(
            host=server.url.host,
            port=server.url.port or 5432,
            user=server.url.username or "postgres",
            listen_port=port,
            pool_mode=pool_mode,
            pool_size=pool_size,
            max_client_conn=max_client_conn,
            folder=folder,
            more=more,
        )
    )
    process = subprocess.Popen(
        [program, config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
        **as_user,
    )
    key = f"stop {folder}"
    when_this_process_ends(key, stop_pgbouncer, pid=process.pid, folder=str(folder))
    try:
        _wait_until_listening(process, port, folder / "pgbouncer.log")
        yield port, version or "PgBouncer"
    finally:
        cancel(key)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_pgbouncer(pid: int, folder: str) -> None:
    """Stop the PgBouncer of a process that has ended, and remove its folder."""
    terminate(pid)
    shutil.rmtree(folder, ignore_errors=True)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            said = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise NoPgBouncer(f"pgbouncer stopped at start: {' '.join(said) or process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise NoPgBouncer("pgbouncer did not listen within 10 s") from None
            time.sleep(0.02)
