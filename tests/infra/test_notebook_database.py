"""`fresh_database`: each notebook's own database, on the database `DATABASE_URL` selects, and gone
when the kernel is, however the kernel ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from labkit.infra.notebook_database import describe_database, fresh_database, selected_backend
from labkit.infra.postgres import PostgresServer, libpq_url
from labkit.settings import DATA_DIR


@pytest.mark.parametrize(
    ("value", "backend"),
    [
        (None, "sqlite"),
        ("sqlite:///elsewhere.db", "sqlite"),
        ("postgresql://lab:secret@db.internal:5432/shop", "postgresql"),
        ("postgresql+asyncpg://lab@db.internal/shop", "postgresql"),
    ],
)
def test_database_url_selects_the_backend(
    monkeypatch: pytest.MonkeyPatch, value: str | None, backend: str
) -> None:
    if value is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", value)
    assert selected_backend() == backend


def test_an_sqlite_database_is_a_new_file_under_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    leftover = DATA_DIR / "test_scratch.db"
    leftover.write_bytes(b"rows of an earlier run")
    try:
        url = fresh_database("test_scratch")
        assert url.database == str(leftover) and not leftover.exists()
        said = describe_database(url)
        assert said.startswith("This run uses SQLite: data/test_scratch.db, a new file")
        assert "whatever DATABASE_URL says" in describe_database(url, fixed=True)
    finally:
        leftover.unlink(missing_ok=True)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="no backend 'mysql'"):
        fresh_database("test_scratch", "mysql")


def test_the_description_never_shows_a_password() -> None:
    url = make_url("postgresql+psycopg://lab:hunter2-secret@db.internal:5432/lab_test_scratch")
    said = describe_database(url)
    assert "hunter2" not in said
    assert said.startswith("This run uses PostgreSQL: database lab_test_scratch on lab@db.internal")


def databases(server: PostgresServer) -> set[str]:
    with psycopg.connect(libpq_url(server.url)) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


def test_a_postgres_database_is_dropped_when_its_process_is_killed(
    postgres_server: PostgresServer,
) -> None:
    """nbval kills its kernels (no exit handlers run): the database must go all the same."""
    kernel = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                from sqlalchemy import create_engine, text
                from labkit.infra.notebook_database import fresh_database
                url = fresh_database("test_scratch_killed", "postgresql")
                with create_engine(url).connect() as conn:  # a connection left open, too
                    conn.execute(text("SELECT 1"))
                    print(url.database, flush=True)
                    sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert kernel.stdout is not None
        name = kernel.stdout.readline().strip()
        assert name == "lab_test_scratch_killed"
        assert name in databases(postgres_server)
    finally:
        kernel.send_signal(signal.SIGKILL)
        kernel.wait()
    deadline = time.monotonic() + 10
    while name in databases(postgres_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in databases(postgres_server)
