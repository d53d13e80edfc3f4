"""What a client leaves on its server session reaches the next client through PgBouncer's
transaction pooling, and only there (labkit.lessons.workers.session_state).

These tests need PostgreSQL and PgBouncer; where either is missing they are skipped with the
reason, unless LAB_REQUIRE_POSTGRES is set, as in CI, which makes that a failure.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL
from support import cannot_run

from labkit.infra.pgbouncer import pgbouncer, pgbouncer_if_any
from labkit.infra.postgres import PostgresServer, libpq_url
from labkit.lessons.workers.session_state import STEPS, TIMEOUT, ZONE, reset_cost, session_state

ALWAYS = {"server_reset_query_always": 1}


@pytest.fixture
def bouncer_or_skip() -> None:
    program, reason = pgbouncer_if_any()
    if program is None:
        cannot_run(reason)


@pytest.mark.usefixtures("bouncer_or_skip")
def test_a_set_outside_a_transaction_reaches_the_next_client_only_through_transaction_pooling(
    postgres_server: PostgresServer, postgres_url: URL
) -> None:
    """Straight to the server nothing leaks. Through transaction pooling B reads A's
    statement_timeout and takes A's advisory lock, C reads it after both left, and A loses it
    after a move; a tracked parameter (TimeZone) and the transaction-level forms stay put."""
    direct = session_state(libpq_url(postgres_url))
    with pgbouncer(postgres_server, pool_size=2) as bouncer:
        pooled = session_state(libpq_url(bouncer.url(postgres_url)))
    assert list(direct.seen) == list(pooled.seen) == list(STEPS)
    default = direct.seen["b_sees"]
    assert default != TIMEOUT and not direct.b_on_a_session
    assert direct.seen["a_after_move"] == direct.seen["a_reads_back"] == TIMEOUT
    assert (direct.seen["b_takes_a_lock"], direct.seen["a_unlocks"]) == ("False", "True")
    seen = pooled.seen
    assert pooled.b_on_a_session
    assert seen["b_sees"] == seen["c_sees"] == TIMEOUT and seen["a_after_move"] == default
    assert (seen["b_takes_a_lock"], seen["a_unlocks"]) == ("True", "False")
    assert seen["b_time_zone"] == direct.seen["b_time_zone"] != ZONE
    assert seen["a_time_zone_after_move"] == ZONE
    for state in (direct, pooled):
        assert state.seen["set_local_seen_by_b"] == default
        assert state.seen["xact_lock_taken_by_b"] == "False"


@pytest.mark.usefixtures("bouncer_or_skip")
def test_server_reset_query_always_makes_a_client_lose_its_session_state_after_each_transaction(
    postgres_server: PostgresServer, postgres_url: URL
) -> None:
    """With ``server_reset_query_always = 1`` (set through `pgbouncer(settings=...)`), nothing
    reaches B or C, but A's own SET and prepared statement are gone at its next transaction."""
    with pgbouncer(postgres_server, pool_size=2, settings=ALWAYS) as bouncer:
        assert bouncer.setting("server_reset_query_always") == "1"
        seen = session_state(libpq_url(bouncer.url(postgres_url))).seen
    assert TIMEOUT not in (seen["a_reads_back"], seen["b_sees"], seen["c_sees"])
    assert "does not exist" in seen["a_prepared"]
    assert seen["b_takes_a_lock"] == "True"  # A's lock went with the reset


@pytest.mark.usefixtures("bouncer_or_skip")
def test_reset_cost_times_both_pgbouncers(
    postgres_server: PostgresServer, postgres_url: URL
) -> None:
    """`reset_cost` gives a time per transaction through each PgBouncer, and their ratio."""
    with (
        pgbouncer(postgres_server, pool_size=1) as plain,
        pgbouncer(postgres_server, pool_size=1, settings=ALWAYS) as resetting,
    ):
        cost = reset_cost(
            libpq_url(plain.url(postgres_url)),
            libpq_url(resetting.url(postgres_url)),
            blocks=2,
            per_block=5,
        )
    assert cost.without_us > 0 and cost.with_us > 0
    assert cost.ratio == cost.with_us / cost.without_us
