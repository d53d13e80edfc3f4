"""Prepared statements behind PgBouncer's transaction pooling: the settings the lab recommends,
and the instruments notebook 10 measures them with.

The tests that start PgBouncer need it installed; where it is missing they are skipped with
the reason, unless LAB_REQUIRE_POSTGRES is set, as in CI, which makes that a failure.
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from support import cannot_run

from labkit.app.databases import without_prepared_statements
from labkit.app.seed import create_and_seed
from labkit.infra.pgbouncer import pgbouncer, pgbouncer_if_any
from labkit.infra.postgres import PostgresServer, libpq_url
from labkit.lessons.workers.prepared import prepare_and_roll_back, requests_through, statements_left

pytestmark = pytest.mark.anyio


def pgbouncer_or_skip() -> None:
    program, reason = pgbouncer_if_any()
    if program is None:
        cannot_run(reason)


def test_without_prepared_statements_names_one_setting_per_driver() -> None:
    """asyncpg gets ``statement_cache_size=0`` alone (no name function, which would name the
    statements again), psycopg ``prepare_threshold=None``, SQLite nothing."""
    assert without_prepared_statements(make_url("postgresql+asyncpg://h/d")) == {
        "statement_cache_size": 0
    }
    for driver in ("postgresql+psycopg", "postgresql+psycopg_async"):
        assert without_prepared_statements(make_url(f"{driver}://h/d")) == {
            "prepare_threshold": None
        }
    assert without_prepared_statements(make_url("sqlite:///lab.db")) == {}


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg_async"])
async def test_without_prepared_statements_fails_nothing_and_leaves_nothing_behind_pgbouncer(
    postgres_server: PostgresServer, postgres_url: URL, driver: str
) -> None:
    """200 concurrent requests on 5 client connections through PgBouncer's 2 server
    connections (transaction pooling): none fails, and neither server connection holds a
    prepared statement afterwards."""
    pgbouncer_or_skip()
    create_and_seed(create_engine(postgres_url.set(drivername="postgresql+psycopg")))
    with pgbouncer(postgres_server, pool_size=2) as bouncer:
        database = bouncer.url(postgres_url).set(drivername=driver)
        run = await requests_through(database, connect_args=without_prepared_statements(database))
        left = statements_left(libpq_url(database), bouncer.pool_size)
    assert run.failed == 0, run.errors
    assert left == [0, 0]


def test_statements_left_counts_each_server_connection_apart(
    postgres_server: PostgresServer, postgres_url: URL
) -> None:
    """A statement prepared in one transaction through PgBouncer stays on its server
    connection: `statements_left` finds it there (1), and none on the other (0)."""
    pgbouncer_or_skip()
    with pgbouncer(postgres_server, pool_size=2) as bouncer:
        url = libpq_url(bouncer.url(postgres_url))
        with psycopg.connect(url) as client:
            client.execute("PREPARE stays AS SELECT 1")
            client.commit()  # the server connection goes back to PgBouncer, with `stays`
        left = statements_left(url, bouncer.pool_size)
        assert bouncer.setting("pool_mode") == "transaction"
        assert bouncer.setting("no_such_setting") is None
    assert left == [0, 1]


def test_a_rollback_does_not_undo_a_prepare_but_drops_the_type_it_used(
    postgres_url: URL,
) -> None:
    """``PREPARE`` outlives the rollback of its transaction, and of a failed one; a statement
    on a type the rollback dropped fails once the type is created again."""
    rolled = prepare_and_roll_back(libpq_url(postgres_url))
    assert rolled.after_rollback == ["kept"]
    assert rolled.after_failure == ["kept", "kept_too"]
    assert "cache lookup failed for type" in rolled.type_recreated
