"""What labkit's tests share, beside conftest's fixtures (which are built on it): a database of a
test's own on either backend, the lab's PostgreSQL server or a skip (a failure under
LAB_REQUIRE_POSTGRES), and what an app or a database still holds after its requests.
Built on `labkit.servers.postgres`, as the notebooks are.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from labkit import AsyncDatabase, SyncDatabase, sqlite_url
from labkit.scratch import BACKENDS
from labkit.servers.postgres import (
    REQUIRE_POSTGRES,
    NoPostgres,
    PostgresServer,
    find_server,
    run_admin,
    scratch_database,
)

every_backend = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
"""Run a test (or a module, as ``pytestmark``) once per backend, whatever `DATABASE_URL` says:
for promises the two keep differently (PostgreSQL cannot store NUL, for one)."""


def refuses_connections(port: int) -> bool:
    """Nothing accepts a TCP connection on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def cannot_run(reason: str) -> NoReturn:
    """Skip the test with `reason`; under LAB_REQUIRE_POSTGRES, fail it with `reason` instead."""
    if os.environ.get(REQUIRE_POSTGRES):
        pytest.fail(f"{REQUIRE_POSTGRES} is set but {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_or_skip() -> PostgresServer:
    """The lab's PostgreSQL server; if there is none, skip (fail, under LAB_REQUIRE_POSTGRES)."""
    try:
        return find_server()
    except NoPostgres as exc:
        reason = str(exc)
    cannot_run(reason)


def admin(sql: str) -> None:
    """Run one statement on the lab's server as its admin, outside a transaction."""
    run_admin(postgres_or_skip(), sql)


@contextmanager
def database_of_own(backend: str, folder: Path) -> Iterator[URL]:
    """A fresh SQLite file in `folder`, or a new, empty PostgreSQL database ``lab_test_<random>``
    that is dropped (with its connections) on exit."""
    if backend == "sqlite":
        yield sqlite_url(folder / "lab.db")
    elif backend == "postgresql":
        with scratch_database(postgres_or_skip(), prefix="lab_test") as url:
            yield url
    else:
        raise ValueError(f"no backend {backend!r}: one of {BACKENDS}")


Holder = FastAPI | SyncDatabase | AsyncDatabase


def held(*holders: Holder) -> dict[str, int]:
    """Sessions still open (the session ledger) and connections still checked out of the pool,
    for each database: all zero when nothing is held. An app stands for both its databases."""
    databases: list[SyncDatabase | AsyncDatabase] = []
    for holder in holders:
        if isinstance(holder, FastAPI):
            databases += [holder.state.sync_db, holder.state.async_db]
        else:
            databases.append(holder)
    counts: dict[str, int] = {}
    seen: Counter[str] = Counter()
    for database in databases:
        kind = "async" if isinstance(database, AsyncDatabase) else "sync"
        seen[kind] += 1
        name = kind if seen[kind] == 1 else f"{kind} #{seen[kind]}"
        counts[f"{name} sessions"] = database.ledger.open
        counts[f"{name} connections"] = database.engine.pool.checkedout()  # type: ignore[attr-defined]
    return counts


def assert_nothing_held(*holders: Holder) -> None:
    """Every session closed and every pooled connection back, in each database of `holders`."""
    found = held(*holders)
    assert found == dict.fromkeys(found, 0), found
