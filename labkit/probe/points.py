"""What one probed point measured, and what held it back.

A point is one path at one concurrency: the load driver's result, the connections out across
all pools, where the statements ran, the app's exceptions, the probe's own CPU. `limit_of` reads
the limit from those numbers and the model of labkit.bench.model (`diagnose`); `stall` says
where the model's deadlock rule forbids a point.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.pool import QueuePool

from labkit.bench.model import Diagnosis, Limit, ThroughputModel
from labkit.bench.results import LoadResult, succeeded
from labkit.bench.setups import ASYNC, BLOCKING, THREADPOOL, Holds, Setup
from labkit.instruments.statements import StatementThreads, pool_capacity
from labkit.instruments.watch import EngineCounts

LOOP_HELD_SHARE = 0.5
"""The event loop is the limit when sync database calls held it this share of a run or more."""
CPU_BUSY_SHARE = 0.7
"""The CPU is the limit when the process was busy this share of one core or more (one
interpreter lock: its Python runs on one core at a time; other programs may take the rest)."""
SCALING = 0.6
"""Throughput "grew with the clients" when it grew at least this share of the clients' growth."""
FAILED_SHARE = 0.01
"""A point where more than this share of requests failed is judged "failed", never a limit:
what held back requests that fail says nothing about the ones that work."""


@dataclass(frozen=True)
class ProbePoint:
    """One path at one concurrency: what the load driver and the class-level watches saw."""

    path: str
    result: LoadResult
    conns: EngineCounts
    statements: StatementThreads
    app_errors: Counter[str] = field(default_factory=Counter)
    """Exceptions the app raised out of this point's requests, by ``Type: message``."""
    probe_cpu_ms: float = math.nan
    """CPU milliseconds per request the probe itself spent (its client, its watches), as
    `ProbeCost` measures them."""
    watches_cpu_ms: float = 0.0
    """The watches' part of `probe_cpu_ms`: spent per second of the run, not per request."""
    threaded: tuple[str, ...] = ()
    """The route and dependencies FastAPI runs in worker threads here (`threaded_calls`)."""

    @property
    def concurrency(self) -> int:
        return self.result.concurrency

    @property
    def pool(self) -> int | None:
        """Connections the pools this path used can lend at once; None if unlimited or unseen."""
        capacities = [pool_capacity(p) for p in self.statements.pools.values()]
        if not capacities or None in capacities:
            return None
        return sum(c for c in capacities if c is not None)

    @property
    def uses_threads(self) -> bool:
        """AnyIO's worker threads ran some of it: a ``def`` route, or a sync dependency."""
        return self.result.peak_threads > 0

    @property
    def statements_in_threads(self) -> bool:
        """Statements ran in worker threads: a thread then waits on the database, and on the
        pool for its connection, as the threadpool setup's do."""
        return self.statements.elsewhere > 0

    @property
    def failed_share(self) -> float:
        return self.result.failed / max(1, self.result.requests)

    @property
    def app_cpu_ms(self) -> float:
        """CPU milliseconds per request, the probe's own share taken out (never below 0)."""
        return max(0.0, self.result.cpu_ms - self.probe_cpu_ms)

    def failures(self) -> str:
        """Failed requests by status, then by exception: ``500 (20; the app raised
        LedgerError 20 times)``, or ``ReadTimeout (3)`` for one the client raised."""
        statuses = sorted(self.result.statuses.items())
        said = [f"{status} ({n})" for status, n in statuses if not succeeded(status)]
        said.extend(f"{kind} ({n})" for kind, n in self.result.errors.items())
        raised: Counter[str] = Counter()
        for name, n in self.app_errors.items():
            raised[name.split(":")[0]] += n
        if raised:
            kinds = ", ".join(f"{kind} {n} times" for kind, n in raised.items())
            said.append(f"the app raised {kinds}")
        return "; ".join(said)

    @property
    def loop_db_share(self) -> float:
        """The share of the run the event loop spent inside sync database calls."""
        return min(1.0, self.statements.loop_held_s / self.result.elapsed_s)

    @property
    def cpu_share(self) -> float:
        """Process CPU time over wall time: 1.0 is one core busy the whole run."""
        return self.result.cpu_s / self.result.elapsed_s

    @property
    def setup(self) -> Setup:
        """The lab setup whose ``C_eff`` rule this route follows, told from what it did: a
        thread used for something else (a class dependency's ``__init__``) holds no connection,
        so only statements on worker threads make it the threadpool setup's."""
        if self.statements.held_loop:
            return BLOCKING
        return THREADPOOL if self.statements_in_threads else ASYNC

    def model(self, cpu_s: float) -> ThroughputModel:
        """The model with this point's limits, its setup taking `cpu_s` per request: its pools'
        size (as many as its clients where unlimited or unseen), AnyIO's thread limit."""
        pool = self.pool if self.pool is not None else self.concurrency
        threads = int(self.result.thread_limit)
        return ThroughputModel({self.setup.name: cpu_s}, pool=pool, threads=threads)

    @property
    def c_eff(self) -> int:
        """The model's ``C_eff``: how many of the clients' requests can wait on the database."""
        return self.model(math.nan).effective_concurrency(self.setup.name, self.concurrency)


def cpu_per_request_s(points: Sequence[ProbePoint]) -> float:
    """The model's ``s``: CPU seconds per request at the path's fewest clients (least contention).

    The probe's client is counted in, as in the lab's calibration: it runs on the same core. Its
    watches are left out: they wake every millisecond however many requests run, so at one
    client they add a share per request that more clients spread thin.
    """
    first = points[0]
    return (first.result.cpu_ms - first.watches_cpu_ms) / 1000


def diagnose(
    point: ProbePoint, points: Sequence[ProbePoint], clients: int | None = None
) -> Diagnosis:
    """The model of labkit.bench.model at `point` (or at `clients` clients with its limits).

    Its setup, pool and thread limit are the point's (`ProbePoint.model`); ``s`` is the path's
    (`cpu_per_request_s`); ``L``, each request's wait, is read from the path's first point as
    ``C_eff / throughput - s`` (true while that point is below the CPU's bound). Both are NaN
    where that point had no answer or no CPU time, and so is every rule that needs them.
    """
    first, s = points[0], cpu_per_request_s(points)
    measured = first.result.ok > 0 and s > 0
    wait_s = first.c_eff / first.result.throughput - s if measured else math.nan
    model = point.model(s if measured else math.nan)
    return model.diagnose(point.setup, point.concurrency if clients is None else clients, wait_s)


ProbeLimit = Limit | Literal["failed", "other"]
"""What held a probed point back: one of the model's limits, or failing requests, or something
the probe does not see."""


def limit_of(point: ProbePoint, points: Sequence[ProbePoint]) -> ProbeLimit:
    """What held `point` back, from its measurements and its path's first (fewest clients) point.

    A point where more than `FAILED_SHARE` of the requests failed is "failed", whatever else
    was full. Otherwise, first what was busy most of the run: the event loop inside sync
    database calls, or the CPU (with the CPU saturated, requests queue for it while holding
    connections and threads, so full pools say nothing then). Then the model's ``C_eff``
    limits: the pool, then the threads (a thread waiting for a connection is busy too, so a
    full pool also fills the threads). Then, if throughput kept up with the clients, the
    clients; if it did not and the model's `Diagnosis.cpu_knee` is near, the CPU; else
    something the probe does not see.
    """
    first, result = points[0], point.result
    if result.ok == 0 or point.failed_share > FAILED_SHARE:
        return "failed"
    if point.statements.held_loop and point.loop_db_share >= LOOP_HELD_SHARE:
        return "event loop"
    if point.cpu_share >= CPU_BUSY_SHARE:
        return "cpu"
    pool = point.pool
    if pool is not None and point.concurrency > pool and point.conns.peak_checked_out >= pool:
        return "pool"
    threads = result.thread_limit
    if point.uses_threads and point.concurrency > threads and result.peak_threads >= threads:
        return "threads"
    if point is first or growth(first, point) >= SCALING * point.concurrency / first.concurrency:
        return "clients"
    if point.c_eff >= diagnose(point, points).cpu_knee / 2:
        return "cpu"
    return "other"


def growth(first: ProbePoint, point: ProbePoint) -> float:
    return point.result.throughput / first.result.throughput if first.result.ok else float("nan")


def stall(points: Sequence[ProbePoint], concurrency: int) -> str | None:
    """Why `concurrency` clients would stall this path in its pool (None if they would not).

    Notebook 05's two deadlocks (`Diagnosis.may_deadlock`), told from the path's last point so
    far: past the pool's size, a route holding the loop waits on the loop for a connection only
    the loop could give back; from ``threads + pool`` requests, a route whose statements ran on
    worker threads can have every thread wait for a connection whose session waits for a
    thread to close it. Threads that ran no statement (a class dependency's ``__init__``) hold
    no connection: such a route only queues. Each stall lasts the pool's timeout, and recurs.
    The reason is said without its concurrency, which the caller puts first.
    """
    last = points[-1] if points else None
    if last is None or last.pool is None or not diagnose(last, points, concurrency).may_deadlock:
        return None
    pool, threads = last.pool, last.result.thread_limit
    timeout = max(p.timeout() for p in last.statements.pools.values() if isinstance(p, QueuePool))
    wait = f"each stall lasts the pool's timeout ({timeout:g} s) and ends in an error"
    if last.setup.holds is Holds.EVENT_LOOP:
        return (
            f"more requests than the pool's {pool} connections, on a route that holds the "
            f"event loop, wait for connections only the loop frees; {wait}"
        )
    return (
        f"{threads:g} threads + {pool} connections in flight, with statements on worker "
        f"threads, can leave every thread waiting for a connection, each held for a thread; "
        f"{wait}"
    )
