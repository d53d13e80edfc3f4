"""A pool that a forked child inherits: the parent's connection, shared by two processes.

``os.fork()`` copies a process, its open sockets included. An engine whose pool holds a
connection when the process forks gives the child that same connection: one socket, one
server session, two processes. That is what gunicorn's ``--preload`` does to an engine that
connected while the app was imported (gunicorn forks its workers from the process that imported
the app); uvicorn's ``--workers`` starts each worker with multiprocessing's *spawn* instead, a
new interpreter that imports the app itself and inherits no pool.

`fork_rounds` forks a child from a parent whose pool holds one connection, again and again, in
two scenarios:

- ``"child closes"``: the child checks a connection out of the pool it inherited, runs a query,
  and closes its pool (``engine.dispose()``), as a worker's shutdown does; then the parent runs
  a query on its own pool. The child's checkout gets the parent's server session (the same
  ``pg_backend_pid()``), and its ``dispose()`` ends that session for both: the parent's next
  query fails, every time.
- ``"both at once"``: parent and child each run a query at the same moment. Both write to one
  socket and read from it, and which process reads which answer is a race: a round may work,
  give a process the other's row, fail, or hang (a round is given up after `HANG_S`).

SQLAlchemy's fix, for a child that inherits an engine, is ``engine.dispose(close=False)`` first
thing in the child: a new, empty pool, and the parent's connections left alone (``Engine.dispose``
in ``sqlalchemy/engine/base.py``). psycopg keeps a child from closing the parent's connection only
when the connection is garbage collected (``PGconn.__del__`` checks the process id, in
``psycopg/pq/pq_ctypes.py``); a ``close()`` it is asked for, it does.

The rounds run in a subprocess of their own (`fork_rounds` runs this file as a script): a
Jupyter kernel has threads, and a fork copies none of them, only the locks they may hold.
gunicorn's master process, which forks the workers, is single-threaded too. So this module
imports nothing of labkit's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

SCENARIOS = ("child closes", "both at once")
HANG_S = 0.25
"""How long a process may wait for its answer (a checkout and one query, a few milliseconds)
before its round counts as hung."""

WHO = text("SELECT :who, pg_backend_pid(), pg_sleep(0.005)")
"""Says who asked (a row read by the other process is a wrong result), and on which server
session; the sleep keeps both queries in flight together."""


@dataclass(frozen=True)
class ForkRounds:
    """What `rounds` forks of one scenario showed, with or without the fix, counted.

    `outcomes` counts the rounds by what went wrong first: ``"hung"``, ``"error"``, ``"wrong
    result"``, or ``"both worked"``. `shared_session` counts the rounds whose child ran on the
    parent's server session, `kept_session` those after which the parent's pool still had the
    server session it had before the fork. `errors`: each distinct error, once.
    """

    scenario: str
    fix: bool
    rounds: int
    outcomes: dict[str, int]
    shared_session: int
    kept_session: int
    errors: list[str] = field(default_factory=list)


def _error(exc: BaseException) -> str:
    """The driver's error class and the first line of its message."""
    found = getattr(exc, "orig", None) or exc
    message = str(found).strip().splitlines()[0] if str(found).strip() else ""
    return f"{type(found).__name__}: {message}"


class _Hung(Exception):
    """A process of a round waited `HANG_S` for its answer."""


def _on_alarm(_signum: int, _frame: object) -> None:
    raise _Hung(f"no answer within {HANG_S} s")


def _ask(engine: Engine, who: str) -> dict[str, Any]:
    """One checkout and one query: the row's (who, backend pid), or what went wrong."""
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        with engine.connect() as conn:
            said, backend, _ = conn.execute(WHO, {"who": who}).one()
        return {"who": said, "backend": backend}
    except _Hung:
        return {"hung": True}
    except Exception as exc:  # the driver's errors, whatever their class, are the outcome
        return {"error": _error(exc)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _child(engine: Engine, scenario: str, fix: bool, go: int, report: int) -> None:
    """In the forked child: (the fix,) then its query, when the parent says go; in the "child
    closes" scenario, its pool closed afterwards, as a worker's shutdown closes it."""
    if fix:
        engine.dispose(close=False)  # a new pool; the parent's connections left alone
    os.read(go, 1)
    said = _ask(engine, "child")
    if scenario == "child closes":
        engine.dispose()  # closes the connections this child's pool holds
    os.write(report, json.dumps(said).encode())


def one_round(engine: Engine, scenario: str, fix: bool) -> dict[str, Any]:
    """The parent's pool holds one connection; a child is forked and uses the pool; the parent
    uses it too: at once, or after the child closed its pool and exited. What each side saw."""
    before = _ask(engine, "parent")
    # the connection is back in the pool, its socket open: the child inherits both
    go_read, go_write = os.pipe()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(go_write)
        os.close(read)
        try:
            _child(engine, scenario, fix, go_read, write)
        finally:
            os._exit(0)  # no cleanup of the parent's objects, as multiprocessing's fork does
    os.close(go_read)
    os.close(write)
    os.write(go_write, b"g")
    if scenario == "child closes":
        os.waitpid(pid, 0)
    after = _ask(engine, "parent")
    if scenario == "both at once":
        os.waitpid(pid, 0)
    os.close(go_write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read() or '{"hung": true}')
    return {"before": before, "child": child, "after": after}


def _outcome(seen: dict[str, Any]) -> str:
    sides = [(seen["child"], "child"), (seen["after"], "parent")]
    if any("hung" in said for said, _ in sides):
        return "hung"
    if any("error" in said for said, _ in sides):
        return "error"
    if any(said["who"] != who for said, who in sides):
        return "wrong result"
    return "both worked"


def run_rounds(url: str, scenario: str, rounds: int, fix: bool) -> ForkRounds:
    """`rounds` rounds of `scenario` on one engine for `url` (psycopg, sync; a pool of one
    connection, so that the parent's checkout always gets the one the child inherited).

    A round that goes wrong leaves the parent's connection closed by the server, or in the
    middle of an answer: a new one is opened for the next round."""
    outcomes: Counter[str] = Counter()
    shared = kept = 0
    errors: list[str] = []
    signal.signal(signal.SIGALRM, _on_alarm)
    engine = create_engine(url, pool_size=1, max_overflow=0)
    for _ in range(rounds):
        try:
            seen = one_round(engine, scenario, fix)
        finally:
            if scenario == "both at once":
                engine.dispose()  # the child has exited: closing touches no one else's
        outcomes[_outcome(seen)] += 1
        before = seen["before"].get("backend")
        shared += seen["child"].get("backend") == before
        kept += seen["after"].get("backend") == before
        for said in (seen["child"], seen["after"]):
            if "error" in said and said["error"] not in errors:
                errors.append(said["error"])
    engine.dispose()
    return ForkRounds(scenario, fix, rounds, dict(outcomes), shared, kept, errors)


def fork_rounds(url: URL, rounds: int = 10, at_once_rounds: int = 5) -> list[ForkRounds]:
    """`run_rounds` for each scenario (`rounds` of "child closes", `at_once_rounds` of "both at
    once": a hung round takes `HANG_S`), without the fix and with it, in a subprocess of its own
    (see the module's docstring), on the database `url` names, through psycopg.

    The URL goes to the subprocess on its stdin, not its command line, where any process on the
    machine could read its password."""
    job = {
        "url": url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False),
        "rounds": {"child closes": rounds, "both at once": at_once_rounds},
    }
    done = subprocess.run(
        [sys.executable, __file__],  # as a script: labkit's package (the app, FastAPI) not imported
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the forking subprocess failed: {done.stderr[-2000:]}")
    return [ForkRounds(**fields) for fields in json.loads(done.stdout)]


def main() -> None:
    """The subprocess: the job from stdin; every scenario's counts, without the fix and with it,
    as JSON on stdout."""
    job = json.load(sys.stdin)
    # a round that goes wrong makes SQLAlchemy's pool log the rollback it could not send: that
    # is the failure being counted, and would bury a real one in stderr
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    found = [
        run_rounds(job["url"], scenario, job["rounds"][scenario], fix)
        for scenario in SCENARIOS
        for fix in (False, True)
    ]
    json.dump([vars(result) for result in found], sys.stdout)


if __name__ == "__main__":
    main()
