"""A pool that a forked child inherits shares the parent's server session, and
``engine.dispose(close=False)`` in the child keeps them apart."""

from __future__ import annotations

from sqlalchemy.engine import URL

from labkit.lessons.workers.forked_pools import fork_rounds


def test_a_forked_child_breaks_the_parents_connection_unless_it_disposes_its_pool_first(
    postgres_url: URL,
) -> None:
    """Without the fix every child runs on the parent's server session and the parent's next
    query fails; with ``dispose(close=False)`` in the child, none does, the parent keeps its
    session, and queries at the same moment all get their own answers."""
    closes, closes_fixed, at_once, at_once_fixed = fork_rounds(
        postgres_url, rounds=3, at_once_rounds=2
    )
    assert (closes.scenario, closes.fix, at_once.scenario, at_once_fixed.fix) == (
        "child closes", False, "both at once", True,
    )  # fmt: skip
    assert closes.outcomes == {"error": 3} and closes.shared_session == 3
    assert closes.kept_session == 0
    assert all(error.startswith("OperationalError") for error in closes.errors), closes.errors
    assert closes_fixed.outcomes == {"both worked": 3}
    assert closes_fixed.shared_session == 0 and closes_fixed.kept_session == 3
    assert at_once_fixed.outcomes == {"both worked": 2} and at_once_fixed.shared_session == 0
    assert sum(at_once.outcomes.values()) == 2  # what went wrong is a race: only counted
