"""``python -m labkit probe``: the lab's instruments on anyone's FastAPI app, from outside.

A user's app is not built to be measured, and should not have to be: nothing here needs a
reference to its engines or a change to its code. It is imported as uvicorn imports it, started
through its lifespan, and watched through SQLAlchemy's class-level events, which reach every
engine in the process, made at import time or later: `latency_everywhere` (the simulated wait),
`watch_engine(None)` (connections out at once, all pools), `watch_statement_threads` (sync
statements on the event loop's thread: a sync `Session` in an ``async def`` route); AnyIO's
threads are sampled by `run_load`'s `ThreadGauge`, and `threaded_calls` names who used them.
The app's own exceptions are kept with their tracebacks (labkit.probe.serving).

Each path is loaded at each concurrency with the lab's load driver, and each path's points are
judged by the model of labkit.bench.model: what limits how many requests wait on the
database at once (``C_eff``), read here from what was measured rather than from a setup's name.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx
from sqlalchemy.pool import QueuePool
from starlette.types import ASGIApp, Receive, Scope, Send

from labkit.app.client import BASE_URL
from labkit.bench.load import LAG_INTERVAL_S, run_load
from labkit.bench.model import Diagnosis, Limit, ThroughputModel
from labkit.bench.results import LoadResult, Tabular
from labkit.bench.setups import ASYNC, BLOCKING, THREADPOOL, Holds, Setup
from labkit.instruments.latency import latency_everywhere
from labkit.instruments.statements import StatementThreads, pool_capacity, watch_statement_threads
from labkit.instruments.watch import EngineCounts, LagProbe, ThreadGauge, watch_engine
from labkit.probe.request import ProbeRequest
from labkit.probe.serving import AppErrors, served
from labkit.probe.thread_users import threaded_calls

if TYPE_CHECKING:
    import pandas as pd
    from tqdm import tqdm  # a progress bar: tqdm.auto's, a widget in a notebook

LOOP_HELD_SHARE = 0.5
"""The event loop is the limit when sync database calls held it this share of a run or more."""
CPU_BUSY_SHARE = 0.7
"""The CPU is the limit when the process was busy this share of one core or more (one
interpreter lock: its Python runs on one core at a time; other programs may take the rest)."""
SHARED_COLUMNS = ("ok", "failed", "rps", "p50_ms", "p99_ms", "lag_p99_ms")
"""The columns a probe's rows take from the load driver's `LoadResult.row`."""
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
        said = [
            f"{status} ({n})" for status, n in sorted(self.result.statuses.items()) if status >= 400
        ]
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
    if point is first or _growth(first, point) >= SCALING * point.concurrency / first.concurrency:
        return "clients"
    if point.c_eff >= diagnose(point, points).cpu_knee / 2:
        return "cpu"
    return "other"


def _growth(first: ProbePoint, point: ProbePoint) -> float:
    return point.result.throughput / first.result.throughput if first.result.ok else float("nan")


def verdict(points: Sequence[ProbePoint]) -> str:
    """One sentence for one path: what holds it back at its most clients, and what to change."""
    first, top = points[0], points[-1]
    c, result = top.concurrency, top.result
    grew = (
        f"throughput x{_growth(first, top):.1f} from C={first.concurrency} to C={c}"
        if top is not first
        else f"C={c} only"
    )
    limit = limit_of(top, points)
    failing = [p for p in points if p.result.failed]
    failed = ", ".join(
        f"{p.result.failed} of {p.result.requests} at C={p.concurrency}" for p in failing
    )
    if limit == "failed":
        if result.ok == 0:
            return (
                f"{top.path}: no request succeeded ({top.failures()}): fix that first (the path? "
                f"a header? --values?). Below: what the app answered and raised."
            )
        return (
            f"{top.path}: held back by failures: {failed} failed ({top.failures()} at C={c}). "
            f"A limit measured on failing requests says nothing: fix them first. Below: what "
            f"the app answered and raised."
        )
    notes = []
    if limit != "event loop" and top.statements.held_loop:
        notes.append(
            "Its database calls run on the event loop through a sync driver: with a "
            "slower database that becomes the limit; make the route `def` or async."
        )
    if limit != "pool" and top.pool is not None and top.conns.peak_checked_out >= top.pool:
        notes.append(f"All {top.pool} pooled connections were out at once, too.")
    if limit != "threads" and top.uses_threads and result.peak_threads >= result.thread_limit:
        notes.append(f"All {result.thread_limit:g} worker threads were busy at once, too.")
    if top.uses_threads and top.threaded:
        notes.append(_thread_users(top))
    if failing:
        notes.append(f"Requests failed: {failed} ({top.failures() or 'none at the top'}).")
    held_back = _held_back_by(limit, top, points, grew)
    return " ".join([f"{top.path}: held back by {held_back}", *notes])


def _thread_users(point: ProbePoint) -> str:
    """Who ran in worker threads on `point`'s path, and whether that can hold a connection."""
    who = " and ".join(point.threaded)
    if point.statements_in_threads:
        return (
            f"Worker threads ran {who}, and statements ran there: each such request holds a "
            f"thread and a connection while it waits on the database."
        )
    if point.setup is ASYNC:
        return (
            f"Worker threads ran {who}, and no statement ran there: those threads hold no "
            f"connection, so they cannot stall the pool."
        )
    return f"Worker threads ran {who}; no statement ran there."


def _held_back_by(
    limit: ProbeLimit, top: ProbePoint, points: Sequence[ProbePoint], grew: str
) -> str:
    """The verdict's sentence for `limit` at the path's last point, `top`."""
    c, result = top.concurrency, top.result
    if limit == "event loop":
        return (
            f"the event loop: its database calls ran on the loop's thread through a sync driver "
            f"({top.loop_db_share:.0%} of the run at C={c}, lag p99 {result.lag_p99_ms:.0f} ms), "
            f"so requests took turns ({grew}). Make the route `def`, or use an AsyncSession on "
            f"an async driver."
        )
    if limit == "pool":
        hold_s = top.conns.mean_hold_s
        pool_rps = top.pool / hold_s if top.pool and hold_s > 0 else float("nan")
        return (
            f"the pool: all {top.pool} of its connections were checked out at C={c}, each for "
            f"{hold_s * 1000:.0f} ms on average (until the session closed), which serves at "
            f"most {pool_rps:.0f} requests a second ({grew}). Raise pool_size + max_overflow "
            f"(within what the database accepts), or hold connections for less time."
        )
    if limit == "threads":
        who = " and ".join(top.threaded) or "the route"
        return (
            f"the threads: all {result.thread_limit:g} of AnyIO's worker threads were busy at "
            f"C={c} ({grew}). Raise AnyIO's thread limit, or make {who} `async def`"
            + (" with an AsyncSession." if top.statements_in_threads else ".")
        )
    if limit == "cpu":
        cpu_s, app_ms = cpu_per_request_s(points), points[0].app_cpu_ms
        one_core_rps = 1 / cpu_s if cpu_s > 0 else float("nan")
        return (
            f"the CPU: {cpu_s * 1000:.1f} ms of it per request ({app_ms:.1f} ms the app's, "
            f"{cpu_s * 1000 - app_ms:.1f} ms the probe's client's) lets one core serve about "
            f"{one_core_rps:.0f} requests a second, the "
            f"model's CPU knee is near C_eff={diagnose(top, points).cpu_knee:.0f}, and the "
            f"process was busy {top.cpu_share:.0%} of a core at C={c} ({grew}). More clients will "
            f"not help; do less work per request, or run more worker processes."
        )
    if limit == "clients":
        return (
            f"nothing but the clients: throughput kept up with them ({grew}). Give "
            f"--concurrency larger values to find where it stops."
        )
    return (
        f"not the event loop, the pool, the threads or this process's CPU (busy "
        f"{top.cpu_share:.0%} of a core) as measured, yet {grew}: look for a lock (SQLite "
        f"lets one writer in at a time) or another service the route waits on."
    )


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


@dataclass
class ProbeResult(Tabular):
    """Every point of a probe, in the order run (path by path, concurrency rising)."""

    SHOWN = (
        *("path", "C", "ok", "failed", "rps", "p50_ms", "p99_ms", "lag_p99_ms", "stmts"),
        *("peak_conns", "pool", "peak_threads", "loop_held", "C_eff", "limit"),
    )

    points: list[ProbePoint] = field(default_factory=list)
    latency_ms: float = 0.0
    unsupported: set[str] = field(default_factory=set)
    """Databases whose statements ran without the simulated wait (no sleep call known)."""
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Points not run, or run anyway with ``force``, by path, each with the reason (`stall`)."""
    app_errors: AppErrors = field(default_factory=AppErrors)
    """The first traceback of each exception the app raised (counts are per point)."""

    def by_path(self) -> dict[str, list[ProbePoint]]:
        return {p.path: [q for q in self.points if q.path == p.path] for p in self.points}

    def rows(self) -> list[dict[str, Any]]:
        """One row per point: the table `python -m labkit probe` prints."""
        rows = []
        for path, points in self.by_path().items():
            for point in points:
                result = point.result
                measured = result.row()  # the load driver's own columns, named as in bench
                rows.append(
                    {
                        "path": path,
                        "C": point.concurrency,
                        "L_ms": self.latency_ms,
                        **{name: measured[name] for name in SHARED_COLUMNS},
                        "failures": point.failures(),
                        "stmts": point.statements.statements / result.requests,
                        "peak_conns": point.conns.peak_checked_out,
                        "pool": point.pool,
                        "peak_threads": result.peak_threads,
                        "threads": result.thread_limit,
                        "loop_held": point.statements.held_loop,
                        "stmts_in_threads": point.statements_in_threads,
                        "loop_db_share": point.loop_db_share,
                        "cpu_share": point.cpu_share,
                        "cpu_ms": result.cpu_ms,
                        "probe_cpu_ms": point.probe_cpu_ms,
                        "app_cpu_ms": point.app_cpu_ms,
                        "C_eff": point.c_eff,
                        "limit": limit_of(point, points),
                    }
                )
        return rows

    def to_frame(self) -> pd.DataFrame:
        """As `Tabular.to_frame`, with the pool a whole number, blank where there is none."""
        frame = super().to_frame()
        if "pool" in frame:
            frame["pool"] = frame["pool"].astype("Int64")
        return frame

    def verdicts(self) -> list[str]:
        """One sentence per path (see `verdict`), and why any of its points was not run."""
        return [
            " ".join([verdict(points), *(f"{why}." for why in self.skipped.get(path, []))])
            for path, points in self.by_path().items()
        ]

    def what_failed(self) -> list[str]:
        """What a server's log and a client would show of the failures: each exception the app
        raised, counted, with its first traceback; the first body of each failing status."""
        raised: Counter[str] = Counter()
        bodies: dict[tuple[str, int], str] = {}
        for point in self.points:
            raised.update(point.app_errors)
            for status, text in point.result.first_bodies.items():
                bodies.setdefault((point.path, status), text)
        said = [
            f"The app raised {key} ({n} times); the first traceback:\n"
            f"{self.app_errors.tracebacks.get(key, '(none kept)').rstrip()}"
            for key, n in raised.items()
        ]
        said.extend(
            f"{path} answered {status} first with: {text[:300] or '(an empty body)'}"
            for (path, status), text in bodies.items()
        )
        return said


@dataclass(frozen=True)
class ProbeCost:
    """The CPU the probe itself spends, in this process, beside the app's: its client's per
    request, and its lag probe's and thread gauge's per second of a run (they wake every
    millisecond whatever the requests do). At most this much when the loop is busy: the lag
    probe then wakes less often."""

    client_ms: dict[int, float]
    """CPU milliseconds per request of the client at each concurrency, the watches' share out."""
    watches_ms_per_s: float

    def watches_ms(self, result: LoadResult) -> float:
        """The watches' CPU milliseconds per request in `result`'s run."""
        return self.watches_ms_per_s * result.elapsed_s / max(1, result.requests)

    def per_request_ms(self, result: LoadResult) -> float:
        """The probe's CPU milliseconds per request in `result`'s run, watches included."""
        return self.client_ms[result.concurrency] + self.watches_ms(result)


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that answers 200 at once: what the probe costs without an app."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def probe_cost(counts: dict[int, int], request: ProbeRequest) -> ProbeCost:
    """What the probe spends, measured: its watches idle for a moment, then its client against
    `_nothing` at each concurrency, with as many requests as a point sends."""
    start, cpu_start = time.perf_counter(), time.process_time()
    async with LagProbe(LAG_INTERVAL_S, on_wake=ThreadGauge().sample):
        await asyncio.sleep(0.3)
    watches = (time.process_time() - cpu_start) / (time.perf_counter() - start) * 1000
    transport = httpx.ASGITransport(app=_nothing)
    client_ms = {}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for c, n in counts.items():
            run = await run_load(
                client, "/", requests=n, concurrency=c, warmup=min(c, 10), sent=request.sent
            )
            client_ms[c] = max(0.0, run.cpu_ms - watches * run.elapsed_s / n)
    return ProbeCost(client_ms, watches)


@contextmanager
def _gc_frozen() -> Iterator[None]:
    """Collect once, then leave what exists out of later collections, for the block.

    A full collection over everything importing and starting the app left behind takes tens
    of milliseconds, and would land in whichever point's run happened to trigger it.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """No log record below WARNING, from any logger, for the block: an app that sets its root
    logger to INFO would print a line per request (httpx's "HTTP Request: ..." among them)."""
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(before)


async def probe(
    app: ASGIApp,
    paths: Sequence[str],
    concurrencies: Sequence[int],
    *,
    request: ProbeRequest | None = None,
    latency_ms: float = 0.0,
    requests: int = 200,
    per_client: int = 3,
    warmup: int = 10,
    force: bool = False,
    progress: tqdm[Any] | None = None,
) -> ProbeResult:
    """Load each of `paths` at each of `concurrencies` through `app`, started by its lifespan.

    `request`: the method, headers, body and path parameter values (see `ProbeRequest`; a GET
    with each parameter 1 by default). `latency_ms` is added to every statement on every
    engine, from after startup (a lifespan that seeds a database need not wait for each row) to
    the end. A point sends `requests`, and at least `per_client` per client: with one each, all
    would start together and never reach the steady state the model is about. Each point
    starts with up to `warmup` unmeasured requests, so pools and threads exist before the
    clock starts. The app's errors are answers (a 500 is a failed request), as under a server,
    and kept (`ProbeResult.app_errors`). Points where the path would stall in its pool are
    skipped (`stall`), unless `force`. Logging below WARNING is off while the points run.
    """
    request = request or ProbeRequest()
    concurrencies = sorted(set(concurrencies))
    report = ProbeResult(latency_ms=latency_ms)
    counts = {c: max(requests, per_client * c) for c in concurrencies}
    if progress is not None:
        progress.reset(total=len(paths) * sum(counts.values()))
    try:
        async with served(app) as (client, errors):
            report.app_errors = errors
            # The thread watch first: its clock must start before the simulated wait.
            with (
                _quiet_logging(),
                _gc_frozen(),
                watch_statement_threads() as seen,
                latency_everywhere(latency_ms) as slowed,
            ):
                cost = await probe_cost(counts, request)
                for path in paths:
                    path_of = request.path_of(path)
                    threaded = tuple(threaded_calls(app, path_of(0), request.method))
                    done: list[ProbePoint] = []
                    for c in concurrencies:
                        why = stall(done, c)
                        if why is not None and not force:
                            report.skipped.setdefault(path, []).append(
                                f"C={c} not run: {why} (--force runs it)"
                            )
                            if progress is not None:
                                progress.update(counts[c])
                            continue
                        if why is not None:
                            report.skipped.setdefault(path, []).append(
                                f"C={c} run anyway (--force), though {why}"
                            )
                        if progress is not None:
                            progress.set_description(f"{path} C={c}")
                        if warmup:  # unwatched, so statements per request are the run's
                            n = min(c, warmup)
                            await run_load(
                                client, path, requests=n, concurrency=n,
                                path_of=path_of, sent=request.sent,
                            )  # fmt: skip
                        seen.take()  # what ran between points belongs to none
                        errors.take()
                        with watch_engine(None) as conns:
                            result = await run_load(
                                client,
                                path,
                                requests=counts[c],
                                concurrency=c,
                                progress=progress,
                                path_of=path_of,
                                sent=request.sent,
                            )
                        done.append(
                            ProbePoint(
                                path,
                                result,
                                conns,
                                seen.take(),
                                app_errors=errors.take(),
                                probe_cpu_ms=cost.per_request_ms(result),
                                watches_cpu_ms=cost.watches_ms(result),
                                threaded=threaded,
                            )
                        )
                    report.points.extend(done)
                report.unsupported = set(slowed.unsupported)
    finally:
        if progress is not None:
            progress.close()
    return report
