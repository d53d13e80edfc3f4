"""The lab on PostgreSQL: finding a server, databases of its own, both drivers, no secrets shown.

These tests need a server (see `labkit.infra.postgres.find_server`); where there is none they are
skipped with the reason, unless LAB_REQUIRE_POSTGRES is set, as in CI, which makes that a failure.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from support import assert_nothing_held, cannot_run, refuses_connections

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.app.databases import EngineOptions
from labkit.bench.setups import SETUPS
from labkit.infra.pgbouncer import pgbouncer_if_any
from labkit.infra.postgres import (
    NoPostgres,
    PostgresServer,
    find_server,
    postgres_binaries,
    start_throwaway_server,
    throwaway_database,
)

ROOT = Path(__file__).resolve().parents[2]


def database_names(server: PostgresServer) -> set[str]:
    with psycopg.connect(server.url.set(drivername="postgresql").render_as_string(False)) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_a_throwaway_database_is_new_and_is_dropped_afterwards(postgres_server) -> None:
    before = database_names(postgres_server)
    with throwaway_database(postgres_server, prefix="lab_test") as url:
        assert url.database not in before
        assert url.database in database_names(postgres_server)
    assert database_names(postgres_server) == before


@pytest.mark.anyio
async def test_the_app_on_postgres_uses_psycopg_and_asyncpg_and_waits_in_pg_sleep(
    postgres_url,
) -> None:
    app = create_app(postgres_url, EngineOptions(latency_ms=20))
    assert app.sync_db.engine.dialect.driver == "psycopg"
    assert app.async_db.engine.dialect.driver == "asyncpg"
    async with lab_client(app) as client:
        bodies = []
        for setup in SETUPS:
            start = time.perf_counter()
            response = await client.get(f"/{setup}/users/9")
            assert time.perf_counter() - start >= 0.020
            bodies.append(response.json())
    assert bodies[0]["email"] == "user0009@example.com"
    assert bodies[0] == bodies[1] == bodies[2]


@pytest.mark.anyio
async def test_a_url_naming_psycopg_async_gives_the_async_setup_psycopg_instead_of_asyncpg(
    postgres_url,
) -> None:
    app = create_app(
        postgres_url.set(drivername="postgresql+psycopg_async"), EngineOptions(latency_ms=20)
    )
    assert app.sync_db.engine.dialect.driver == "psycopg"
    assert app.async_db.engine.dialect.driver == "psycopg"
    assert app.async_db.engine.dialect.is_async
    async with lab_client(app) as client:
        start = time.perf_counter()
        found = await client.get("/async/users/9")
        waited = time.perf_counter() - start
        missing = await client.get("/async/users/999999")
    assert found.json()["email"] == "user0009@example.com" and waited >= 0.020
    assert missing.status_code == 404
    assert_nothing_held(app)


def test_an_unreachable_database_url_is_reported_without_its_password(monkeypatch) -> None:
    monkeypatch.setattr("labkit.infra.postgres._found", None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://lab:hunter2-secret@127.0.0.1:1/lab")
    with pytest.raises(NoPostgres) as caught:
        find_server()
    assert "127.0.0.1:1" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the refusal that only root meets")
def test_a_throwaway_server_refuses_to_start_as_root() -> None:
    binaries = postgres_binaries() or Path("/nonexistent")
    with pytest.raises(NoPostgres, match="root"):
        start_throwaway_server(binaries)


THROWAWAY_CHECK = """
import pwd, sys
from pathlib import Path

import psycopg

from labkit.infra.postgres import postgres_binaries, start_throwaway_server

server = start_throwaway_server(postgres_binaries(), user=sys.argv[1] or None)
with psycopg.connect(server.url.set(drivername="postgresql").render_as_string(False)) as conn:
    answer = conn.execute("SELECT 40 + 2").fetchone()[0]
    data = conn.execute("SHOW data_directory").fetchone()[0]
runs_as = pwd.getpwuid(Path(data, "postmaster.pid").stat().st_uid).pw_name
print(answer, server.url.host, server.url.port, runs_as, data)
"""


@pytest.mark.slow
def test_a_throwaway_server_starts_answers_and_stops() -> None:
    """In a process of its own, so that its end stops the server. As root, PostgreSQL's
    programs run as user nobody, and only they do: this process, whose Python and packages
    nobody may be unable to read, connects to the server as any client does."""
    binaries = postgres_binaries()
    if binaries is None:
        cannot_run("PostgreSQL's programs (initdb, pg_ctl) are not installed")
    user = "nobody" if os.geteuid() == 0 else ""
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            cannot_run("PostgreSQL refuses to run as root, and there is no user nobody to run it")
    done = subprocess.run(
        [sys.executable, "-c", THROWAWAY_CHECK, user],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer, host, port, runs_as, data = done.stdout.split()
    assert (answer, host) == ("42", "127.0.0.1")
    assert runs_as == (user or pwd.getpwuid(os.geteuid()).pw_name)
    deadline = time.monotonic() + 15  # stopped by a process of its own, once this one ended
    while Path(data).parent.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(data).parent.exists(), "the server's folder was not removed after exit"
    with pytest.raises(psycopg.OperationalError):  # nothing listens there any more
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=3)


KILLED_CHECK = """
import os, signal, sys

from labkit.infra.pgbouncer import pgbouncer
from labkit.infra.postgres import throwaway_server

with throwaway_server(max_connections=5) as server, pgbouncer(server) as bouncer:
    print(server.url.port, bouncer.port, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no exit handler, no finally: as a kernel is killed
"""


@pytest.mark.slow
def test_what_a_killed_process_started_is_stopped_after_it() -> None:
    """A throwaway server and a PgBouncer outlive a killed kernel unless something else stops
    them: labkit.infra.reaper's process does, once the kernel is gone."""
    if postgres_binaries() is None or pgbouncer_if_any()[0] is None:
        cannot_run("needs PostgreSQL's programs and pgbouncer")
    done = subprocess.run(
        [sys.executable, "-c", KILLED_CHECK],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    ports = [int(port) for port in done.stdout.split()]
    deadline = time.monotonic() + 15
    while not all(refuses_connections(port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(refuses_connections(port) for port in ports)
