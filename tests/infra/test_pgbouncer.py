"""A server's connection limit, and PgBouncer lending many clients a few server connections.

These tests need PostgreSQL's programs and PgBouncer; where either is missing they are skipped
with the reason, unless LAB_REQUIRE_POSTGRES is set, as in CI, which makes that a failure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import psycopg
import pytest
from sqlalchemy.engine import URL, make_url
from support import cannot_run, refuses_connections

import labkit.infra.pgbouncer as pgbouncer_module
from labkit.infra.pgbouncer import NoPgBouncer, pgbouncer, pgbouncer_if_any
from labkit.infra.postgres import (
    NoPostgres,
    PostgresServer,
    fresh_postgres_database,
    libpq_url,
    throwaway_server,
    watch_server_connections,
)
from labkit.lessons.workers.max_connections import (
    app_role,
    client_backends,
    connections_held,
    connections_until_refused,
    until_server_holds_only,
)
from labkit.settings import REQUIRE_POSTGRES

TOO_MANY = "sorry, too many clients already"


def pgbouncer_or_skip() -> None:
    """Skip the test where PgBouncer is not installed (`pgbouncer_if_any` raises under
    LAB_REQUIRE_POSTGRES instead, which fails it)."""
    program, reason = pgbouncer_if_any()
    if program is None:
        cannot_run(reason)


@pytest.mark.slow
def test_a_server_refuses_the_connection_past_max_connections() -> None:
    """The 6th connection to a throwaway server with ``max_connections=5`` is refused with
    PostgreSQL's own message; once the others close a new one gets in; after the block nothing
    listens on the server's port any more."""
    with ExitStack() as block:
        try:
            server = block.enter_context(throwaway_server(max_connections=5))
        except NoPostgres as exc:
            cannot_run(str(exc))
        url, port = libpq_url(server.url), server.url.port
        assert port is not None
        with ExitStack() as held:
            for _ in range(5):
                held.enter_context(psycopg.connect(url))
            with pytest.raises(psycopg.OperationalError, match=TOO_MANY):
                psycopg.connect(url)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert refuses_connections(port)


@contextmanager
def small_server(max_connections: int) -> Iterator[PostgresServer]:
    """A throwaway server with `max_connections`, or the test skipped (failed in CI) without."""
    with ExitStack() as block:
        try:
            server = block.enter_context(throwaway_server(max_connections=max_connections))
        except NoPostgres as exc:
            cannot_run(str(exc))
        yield server


@pytest.mark.slow
def test_an_apps_role_is_refused_the_superusers_reserved_slots_sooner() -> None:
    """With ``max_connections=6`` and PostgreSQL's 3 ``superuser_reserved_connections``, the
    superuser opens 6 and an app's role 3, each refused in other words, both SQLSTATE 53300;
    the role owns its database, and asking for it again finds it."""
    with small_server(6) as server:
        database = fresh_postgres_database(server, "lab_roles")
        as_app = app_role(server, database)
        assert app_role(server, database) == as_app
        superuser = asyncio.run(connections_until_refused(server, database))
        app = asyncio.run(connections_until_refused(server, as_app))
        with psycopg.connect(libpq_url(server.url)) as conn:
            query = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
            owner = conn.execute(query, (database.database,)).fetchone()
    assert (superuser.user, superuser.opened, superuser.sqlstate) == ("postgres", 6, "53300")
    assert (app.user, app.opened, app.sqlstate) == ("lab_app", 3, "53300")
    assert TOO_MANY in superuser.message
    assert "remaining connection slots are reserved" in app.message
    assert owner == ("lab_app",)


@pytest.mark.slow
def test_the_server_holds_only_what_a_process_keeps_once_closed_backends_end() -> None:
    """Four connections from this process, three closed: the server's backends come down to the
    one this process still holds, then to none once it is closed too."""
    with small_server(6) as server:
        url, me = libpq_url(server.url), [psutil.Process()]
        kept = psycopg.connect(url)
        others = [psycopg.connect(url) for _ in range(3)]
        assert client_backends(server) == connections_held(server, me) == 4
        for connection in others:
            connection.close()
        assert until_server_holds_only(server, me) == 1
        kept.close()
        assert until_server_holds_only(server) == 0


@pytest.mark.slow
def test_the_monitor_holds_its_connection_before_its_block_begins() -> None:
    """Connections opened first thing in the block find the monitor's already there (5 slots: 4
    left), and the monitor counts them."""
    with small_server(5) as server:
        url = libpq_url(server.url)
        held: list[psycopg.Connection] = []
        with watch_server_connections(server, "postgres") as seen:
            with pytest.raises(psycopg.OperationalError, match=TOO_MANY):
                while True:
                    held.append(psycopg.connect(url))
            deadline = time.monotonic() + 5
            while seen.peak < len(held) and time.monotonic() < deadline:
                time.sleep(0.01)
            for connection in held:
                connection.close()
    assert len(held) == 4
    assert seen.peak == 4, seen.samples


@pytest.mark.slow
def test_pgbouncer_serves_ten_clients_on_two_server_connections(
    postgres_server: PostgresServer, postgres_url: URL
) -> None:
    """Ten clients connected to PgBouncer (``pool_size=2``, transaction pooling) at once each
    run a transaction: all succeed, taking turns on at most two server connections."""
    pgbouncer_or_skip()
    clients = 10
    ready = threading.Barrier(clients)

    def transaction(url: str) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            ready.wait(timeout=10)  # all ten are PgBouncer's clients before any transaction
            with conn.transaction():
                (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
                conn.execute("SELECT pg_sleep(0.05)")
            return pid

    database = postgres_url.database
    assert database is not None
    with pgbouncer(postgres_server, pool_size=2) as bouncer:
        url = libpq_url(bouncer.url(postgres_url))
        with (
            watch_server_connections(postgres_server, database) as seen,
            ThreadPoolExecutor(max_workers=clients) as pool,
        ):
            start = time.perf_counter()
            pids = list(pool.map(transaction, [url] * clients))
            took = time.perf_counter() - start
    assert len(pids) == clients
    assert 1 <= len(set(pids)) <= 2, pids
    assert 0 < seen.peak <= 2, seen.samples
    assert took >= clients / 2 * 0.05  # two at a time, 50 ms each


def test_pgbouncer_missing_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the program, `pgbouncer()` raises `NoPgBouncer` naming apt-get, and
    `pgbouncer_if_any()` gives None and that reason, or raises under LAB_REQUIRE_POSTGRES."""

    class NoFiles(type(Path())):  # type: ignore[misc]
        def exists(self, *args: object, **kwargs: object) -> bool:
            return False

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: `which` finds nothing
    monkeypatch.setattr(pgbouncer_module, "Path", NoFiles)  # nor in /usr/sbin, /usr/bin
    nowhere = PostgresServer(make_url("postgresql://postgres@127.0.0.1:1/postgres"), "none")
    with pytest.raises(NoPgBouncer, match="apt-get install pgbouncer"), pgbouncer(nowhere):
        pass

    monkeypatch.delenv(REQUIRE_POSTGRES, raising=False)
    program, reason = pgbouncer_if_any()
    assert program is None
    assert "not installed" in reason and "apt-get install pgbouncer" in reason

    monkeypatch.setenv(REQUIRE_POSTGRES, "1")
    with pytest.raises(NoPgBouncer, match="apt-get install pgbouncer"):
        pgbouncer_if_any()
