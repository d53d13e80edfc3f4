"""A PostgreSQL database of a test's own on the lab's server, dropped afterwards.

Used by the reliability tests (bad input, outages, leaks, secrets) to run their PostgreSQL
cases; kept small so it can be folded into a shared PostgreSQL fixture. When no server answers,
the PostgreSQL cases are skipped with the reason, unless ``LAB_REQUIRE_POSTGRES`` is set (as CI
sets it), and then they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from labkit import sqlite_url

SERVER = make_url("postgresql://postgres@127.0.0.1:5432/postgres")
"""The lab's PostgreSQL server (trust authentication), through its maintenance database."""

BACKENDS = ("sqlite", "postgresql")


def admin(sql: str) -> None:
    """Run one statement on the server as the superuser, outside a transaction (CREATE DATABASE
    cannot run inside one)."""
    with psycopg.connect(_conninfo(SERVER), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  # the lab's own names, never user input


def _conninfo(url: URL) -> str:
    return f"host={url.host} port={url.port} user={url.username} dbname={url.database}"


def _server_or_skip() -> None:
    try:
        admin("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL server answers at {SERVER.host}:{SERVER.port} ({exc})"
        if os.environ.get("LAB_REQUIRE_POSTGRES"):
            pytest.fail(f"LAB_REQUIRE_POSTGRES is set but {reason}", pytrace=False)
        pytest.skip(reason)


@contextmanager
def scratch_postgres_database() -> Iterator[URL]:
    """A new, empty database ``lab_test_<random>``; dropped (with its connections) on exit."""
    _server_or_skip()
    name = f"lab_test_{uuid.uuid4().hex[:12]}"
    admin(f"CREATE DATABASE {name}")
    try:
        yield SERVER.set(database=name)
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def database_of_own(backend: str, folder: Path) -> Iterator[URL]:
    """A fresh SQLite file in `folder`, or a scratch PostgreSQL database."""
    if backend == "sqlite":
        yield sqlite_url(folder / "lab.db")
    else:
        with scratch_postgres_database() as url:
            yield url
