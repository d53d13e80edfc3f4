"""What a client leaves on its server session, and who meets it behind PgBouncer.

A *session* is what PostgreSQL keeps for one connection: its settings (``SET``), its
session-level advisory locks, its prepared statements. Behind a direct connection, or
PgBouncer's session pooling, a client has its session to itself. Behind transaction pooling a
client holds a server connection only for one transaction, so what it leaves on the session
outside a transaction stays on that server connection: the next client to get it meets it,
and the client itself loses it as soon as its next transaction runs on another one.

`session_state` runs one fixed script with two clients, A and B, against any endpoint (the
server, or a PgBouncer in front of it), and returns what each step saw. The script relies on
PgBouncer reusing the server connection released last (its default, ``server_round_robin =
0``): B's first statements run where A's ran, and while B holds a transaction open, A's
next statement must run on another server connection.

PgBouncer's ``server_reset_query`` (``DISCARD ALL``) cleans a session when its client
disconnects, in session pooling. In transaction pooling it is not run at all, unless
``server_reset_query_always = 1``: then after every transaction, so that a client loses its
own settings at once (PgBouncer's docs call this turning non-deterministic breakage into
deterministic breakage). `reset_cost` times one client's transactions through two
PgBouncers that differ only in that setting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypedDict

import psycopg

TIMEOUT = "5s"
"""What A sets ``statement_timeout`` to (PostgreSQL's default is 0: no limit)."""
ZONE = "Asia/Tokyo"
"""What A sets ``TimeZone`` to: one of the parameters PgBouncer tracks for each client."""
LOCK = 10
"""The key of A's session-level advisory lock; ``LOCK + 1`` for its transaction-level one."""

STEPS = {
    "a_reads_back": f"A: SET statement_timeout = '{TIMEOUT}'; SHOW statement_timeout",
    "b_sees": "B: SHOW statement_timeout",
    "a_after_move": "A, while B holds a transaction open: SHOW statement_timeout",
    "c_sees": "C, a new client once A and B have left: SHOW statement_timeout",
    "b_takes_a_lock": f"B, after A's pg_advisory_lock({LOCK}): pg_try_advisory_lock({LOCK})",
    "a_unlocks": f"A, while B holds a transaction open: pg_advisory_unlock({LOCK})",
    "a_prepared": "A: PREPARE; EXECUTE in its next transaction",
    "b_time_zone": f"B, after A's SET TimeZone = '{ZONE}': SHOW TimeZone",
    "a_time_zone_after_move": "A, while B holds a transaction open: SHOW TimeZone",
    "set_local_seen_by_b": "B, after A's SET LOCAL statement_timeout and COMMIT: SHOW",
    "xact_lock_taken_by_b": (
        f"B, while A's transaction holds pg_advisory_xact_lock({LOCK + 1}):"
        f" pg_try_advisory_xact_lock({LOCK + 1})"
    ),
}
"""Each step of `session_state`, as the notebook's table labels it: the session-level forms,
then the transaction-level ones (the script runs those first, while every session is clean)."""


@dataclass(frozen=True)
class SessionState:
    """What each step of `session_state` saw (keyed as `STEPS`), and whether B's first
    statements ran on A's server session (the same ``pg_backend_pid()``)."""

    seen: dict[str, str]
    b_on_a_session: bool


def _one(conn: psycopg.Connection, sql: str) -> str:
    """The first column of the first row, as text."""
    row = conn.execute(sql).fetchone()
    assert row is not None
    return str(row[0])


def _zone(value: str) -> str:
    """A's time zone by name, any other as the server's default (which varies by machine)."""
    return value if value == ZONE else "the server's default"


class _ClientOptions(TypedDict):
    """What ``psycopg.connect`` is given for each client here."""

    autocommit: bool
    prepare_threshold: int | None


def session_state(url: str) -> SessionState:
    """The script of the module's docstring, through `url` (a libpq URL: the server, or a
    PgBouncer with at least 2 server connections).

    Both clients run in autocommit, as a pool's connection does between transactions: each
    statement outside ``transaction()`` is a transaction of its own. psycopg's
    ``prepare_threshold=None`` keeps its own prepared statements out of the sessions.
    """
    seen: dict[str, str] = {}
    options: _ClientOptions = {"autocommit": True, "prepare_threshold": None}
    with psycopg.connect(url, **options) as a, psycopg.connect(url, **options) as b:
        # the safe forms first, while every session is clean
        with a.transaction():
            a.execute(f"SET LOCAL statement_timeout = '{TIMEOUT}'")
            a.execute(f"SELECT pg_advisory_xact_lock({LOCK + 1})")
            taken = _one(b, f"SELECT pg_try_advisory_xact_lock({LOCK + 1})")
        seen["xact_lock_taken_by_b"] = taken
        seen["set_local_seen_by_b"] = _one(b, "SHOW statement_timeout")
        # the session-level forms
        a.execute(f"SET statement_timeout = '{TIMEOUT}'")
        seen["a_reads_back"] = _one(a, "SHOW statement_timeout")
        a.execute(f"SET TimeZone = '{ZONE}'")
        a.execute(f"SELECT pg_advisory_lock({LOCK})")
        a.execute("PREPARE lab_one AS SELECT 1")
        try:
            seen["a_prepared"] = f"works ({_one(a, 'EXECUTE lab_one')})"
        except psycopg.errors.InvalidSqlStatementName as exc:
            seen["a_prepared"] = str(exc).splitlines()[0]
        a_session = _one(a, "SELECT pg_backend_pid()")
        seen["b_sees"] = _one(b, "SHOW statement_timeout")
        seen["b_takes_a_lock"] = _one(b, f"SELECT pg_try_advisory_lock({LOCK})")
        seen["b_time_zone"] = _zone(_one(b, "SHOW TimeZone"))
        b_session = _one(b, "SELECT pg_backend_pid()")
        with b.transaction():
            b.execute("SELECT 1")  # holds its server connection until the block ends
            seen["a_after_move"] = _one(a, "SHOW statement_timeout")
            seen["a_unlocks"] = _one(a, f"SELECT pg_advisory_unlock({LOCK})")
            seen["a_time_zone_after_move"] = _zone(_one(a, "SHOW TimeZone"))
    with psycopg.connect(url, **options) as c:
        seen["c_sees"] = _one(c, "SHOW statement_timeout")
        # what server_reset_query would have done: the next user of this server connection
        # (the notebook's later cells, a second run) starts clean
        c.execute("DISCARD ALL")
    return SessionState({step: seen[step] for step in STEPS}, a_session == b_session)


@dataclass(frozen=True)
class ResetCost:
    """Microseconds per transaction (one ``SELECT 1`` in autocommit) of one client, through a
    PgBouncer without and with ``server_reset_query_always``: the least of `blocks` blocks."""

    without_us: float
    with_us: float

    @property
    def ratio(self) -> float:
        return self.with_us / self.without_us


def reset_cost(
    without: str, with_reset: str, *, blocks: int = 10, per_block: int = 30
) -> ResetCost:
    """`ResetCost`, measured in alternating blocks so that both see the same machine. Give each
    PgBouncer one server connection: then every transaction waits for the reset after the last.
    """
    options: _ClientOptions = {"autocommit": True, "prepare_threshold": None}
    best = {"without": float("inf"), "with": float("inf")}
    with psycopg.connect(without, **options) as a, psycopg.connect(with_reset, **options) as b:
        clients = {"without": a, "with": b}
        for client in clients.values():
            client.execute("SELECT 1")  # each has its server connection before timing
        for _ in range(blocks):
            for name, client in clients.items():
                start = time.perf_counter()
                for _ in range(per_block):
                    client.execute("SELECT 1")
                took = (time.perf_counter() - start) / per_block * 1e6
                best[name] = min(best[name], took)
    return ResetCost(best["without"], best["with"])
