"""PostgreSQL for the tests: the lab's server or a skip (a failure under LAB_REQUIRE_POSTGRES),
and databases of a test's own on it. Built on `labkit.servers.postgres`, as the notebooks are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from labkit import sqlite_url
from labkit.servers.postgres import (
    NoPostgres,
    PostgresServer,
    find_server,
    run_admin,
    scratch_database,
)

REQUIRE_POSTGRES = "LAB_REQUIRE_POSTGRES"
"""Set (as CI does) so a missing PostgreSQL server fails the tests that need it, not skips them."""

BACKENDS = ("sqlite", "postgresql")


def postgres_or_skip() -> PostgresServer:
    """The lab's PostgreSQL server; if there is none, skip (fail, under LAB_REQUIRE_POSTGRES)."""
    try:
        return find_server()
    except NoPostgres as exc:
        if os.environ.get(REQUIRE_POSTGRES):
            pytest.fail(f"{REQUIRE_POSTGRES} is set but {exc}", pytrace=False)
        pytest.skip(str(exc))


def admin(sql: str) -> None:
    """Run one statement on the lab's server as its admin, outside a transaction."""
    run_admin(postgres_or_skip(), sql)


@contextmanager
def scratch_postgres_database() -> Iterator[URL]:
    """A new, empty database ``lab_test_<random>``; dropped (with its connections) on exit."""
    with scratch_database(postgres_or_skip(), prefix="lab_test") as url:
        yield url


@contextmanager
def database_of_own(backend: str, folder: Path) -> Iterator[URL]:
    """A fresh SQLite file in `folder`, or a scratch PostgreSQL database."""
    if backend == "sqlite":
        yield sqlite_url(folder / "lab.db")
    else:
        with scratch_postgres_database() as url:
            yield url
