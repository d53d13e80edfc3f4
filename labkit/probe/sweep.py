"""``python -m labkit probe``: the lab's instruments on anyone's FastAPI app, from outside.

A user's app is not built to be measured, and should not have to be: nothing here needs a
reference to its engines or a change to its code. It is imported as uvicorn imports it, started
through its lifespan, and watched through SQLAlchemy's class-level events, which reach every
engine in the process, made at import time or later: `latency_everywhere` (the simulated wait),
`watch_engine(None)` (connections out at once, all pools), `watch_statement_threads` (sync
statements on the event loop's thread: a sync `Session` in an ``async def`` route); AnyIO's
threads are sampled by `run_load`'s `ThreadGauge`.

Each path is loaded at each concurrency with the lab's load driver, and each path's points are
judged by the model of labkit.bench.model: what limits how many requests wait on the
database at once (``C_eff``), read here from what was measured rather than from a setup's name.
"""

from __future__ import annotations

import gc
import importlib
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI
from sqlalchemy.pool import QueuePool

from labkit.app.client import lab_client
from labkit.bench.load import run_load
from labkit.bench.model import Diagnosis, Limit, ThroughputModel
from labkit.bench.results import LoadResult, Tabular
from labkit.bench.setups import ASYNC, BLOCKING, THREADPOOL, Holds, Setup
from labkit.instruments.latency import latency_everywhere
from labkit.instruments.statements import StatementThreads, pool_capacity, watch_statement_threads
from labkit.instruments.watch import EngineCounts, watch_engine

if TYPE_CHECKING:
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


class ProbeError(Exception):
    """The app could not be imported or is not an app: said in one line, no traceback."""


def import_app(spec: str, folder: str | Path | None = None) -> FastAPI:
    """``module:attribute`` imported as uvicorn imports it: `folder` (the current one) first on
    ``sys.path``, so ``main:app`` finds ``./main.py``; the attribute may be dotted."""
    module_name, _, attributes = spec.partition(":")
    if not module_name or not attributes:
        raise ProbeError(f'expected "module:attribute", such as main:app, not {spec!r}')
    where = str(Path.cwd() if folder is None else folder)
    if where not in sys.path:
        sys.path.insert(0, where)
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # a module the app imports is missing: the app's own error, with its traceback
        raise ProbeError(f"no module {module_name!r} under {where}") from None
    for attribute in attributes.split("."):
        try:
            found = getattr(found, attribute)
        except AttributeError:
            raise ProbeError(f"module {module_name!r} has no attribute {attributes!r}") from None
    if not hasattr(getattr(found, "router", None), "lifespan_context"):
        raise ProbeError(f"{spec} is not a FastAPI or Starlette app (type {type(found).__name__})")
    app: FastAPI = found  # an app, as far as the probe needs one: checked above
    return app


@dataclass(frozen=True)
class ProbePoint:
    """One path at one concurrency: what the load driver and the class-level watches saw."""

    path: str
    result: LoadResult
    conns: EngineCounts
    statements: StatementThreads

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
    def loop_db_share(self) -> float:
        """The share of the run the event loop spent inside sync database calls."""
        return min(1.0, self.statements.loop_held_s / self.result.elapsed_s)

    @property
    def cpu_share(self) -> float:
        """Process CPU time over wall time: 1.0 is one core busy the whole run."""
        return self.result.cpu_s / self.result.elapsed_s

    @property
    def setup(self) -> Setup:
        """The lab setup whose ``C_eff`` rule this route follows, told from what it did."""
        if self.statements.held_loop:
            return BLOCKING
        return THREADPOOL if self.uses_threads else ASYNC

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
    """The model's ``s``: CPU seconds per request at the path's fewest clients (least contention),
    the load driver's share included, as in the lab's calibration: it runs in this process too."""
    return points[0].result.cpu_ms / 1000


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
"""What held a probed point back: one of the model's limits, or no answer at all, or something
the probe does not see."""


def limit_of(point: ProbePoint, points: Sequence[ProbePoint]) -> ProbeLimit:
    """What held `point` back, from its measurements and its path's first (fewest clients) point.

    First what was busy most of the run: the event loop inside sync database calls, or the
    CPU (with the CPU saturated, requests queue for it while holding connections and threads,
    so full pools say nothing then). Then the model's ``C_eff`` limits: the pool, then the
    threads (a thread waiting for a connection is busy too, so a full pool also fills the
    threads). Then, if throughput kept up with the clients, the clients; if it did not and the
    model's `Diagnosis.cpu_knee` is near, the CPU; else something the probe does not see.
    """
    first, result = points[0], point.result
    if result.ok == 0:
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
    if limit == "failed":
        reasons = result.reasons.most_common(1) or result.errors.most_common(1)
        reason = reasons[0][0] if reasons else "no answer"
        return f"{top.path}: no request succeeded ({reason}): fix that first (the path? --ids?)."
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
    if result.failed:
        notes.append(f"{result.failed} of {result.requests} requests at C={c} failed.")
    held_back = _held_back_by(limit, top, points, grew)
    return " ".join([f"{top.path}: held back by {held_back}", *notes])


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
        return (
            f"the threads: all {result.thread_limit:g} of AnyIO's worker threads were busy at "
            f"C={c} ({grew}). Raise AnyIO's thread limit, or make the route `async def` with an "
            f"AsyncSession."
        )
    if limit == "cpu":
        cpu_s = cpu_per_request_s(points)
        one_core_rps = 1 / cpu_s if cpu_s > 0 else float("nan")
        return (
            f"the CPU: {cpu_s * 1000:.1f} ms of it per request (the load driver's share "
            f"included) lets one core serve about {one_core_rps:.0f} requests a second, the "
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
    the loop could give back; from ``threads + pool`` requests, a ``def`` route's threads all
    wait for connections whose sessions wait for a thread to close them. Each stall lasts the
    pool's timeout, and recurs.
    """
    last = points[-1] if points else None
    if last is None or last.pool is None or not diagnose(last, points, concurrency).may_deadlock:
        return None
    pool, threads = last.pool, last.result.thread_limit
    timeout = max(p.timeout() for p in last.statements.pools.values() if isinstance(p, QueuePool))
    wait = f"each stall lasts the pool's timeout ({timeout:g} s) and ends in an error"
    if last.setup.holds is Holds.EVENT_LOOP:
        return (
            f"C={concurrency} not run: more requests than the pool's {pool} connections, on a "
            f"route that holds the event loop, wait for connections only the loop frees; {wait}"
        )
    return (
        f"C={concurrency} not run: {threads:g} threads + {pool} connections in flight can "
        f"leave every thread waiting for a connection, each held for a thread; {wait}"
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
    """Points not run, by path, each with the reason (see `stall`)."""

    def by_path(self) -> dict[str, list[ProbePoint]]:
        return {p.path: [q for q in self.points if q.path == p.path] for p in self.points}

    def rows(self) -> list[dict[str, Any]]:
        """One row per point: the table `python -m labkit probe` prints."""
        rows = []
        for path, points in self.by_path().items():
            for point in points:
                result, pool = point.result, point.pool
                measured = result.row()  # the load driver's own columns, named as in bench
                rows.append(
                    {
                        "path": path,
                        "C": point.concurrency,
                        "L_ms": self.latency_ms,
                        **{name: measured[name] for name in SHARED_COLUMNS},
                        "stmts": point.statements.statements / result.requests,
                        "peak_conns": point.conns.peak_checked_out,
                        "pool": float("nan") if pool is None else pool,
                        "peak_threads": result.peak_threads,
                        "threads": result.thread_limit,
                        "loop_held": point.statements.held_loop,
                        "loop_db_share": point.loop_db_share,
                        "cpu_share": point.cpu_share,
                        "C_eff": point.c_eff,
                        "limit": limit_of(point, points),
                    }
                )
        return rows

    def verdicts(self) -> list[str]:
        """One sentence per path (see `verdict`), and why any of its points was not run."""
        return [
            " ".join([verdict(points), *(f"{why}." for why in self.skipped.get(path, []))])
            for path, points in self.by_path().items()
        ]


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


async def probe(
    app: FastAPI,
    paths: Sequence[str],
    concurrencies: Sequence[int],
    *,
    latency_ms: float = 0.0,
    requests: int = 200,
    ids: int = 1,
    per_client: int = 3,
    warmup: int = 10,
    progress: tqdm[Any] | None = None,
) -> ProbeResult:
    """Load each of `paths` (GET) at each of `concurrencies` through `app`'s own lifespan.

    `latency_ms` is added to every statement on every engine, from after startup (a lifespan
    that seeds a database need not wait for each row) to the end. ``{id}`` in a path cycles
    through 1 to `ids`. A point sends `requests`, and at least `per_client` per client: with
    one each, all would start together and never reach the steady state the model is about.
    Each point starts with up to `warmup` unmeasured requests, so pools and threads exist
    before the clock starts. The app's errors are answers (a 500 is a failed request), as
    under a server. Points where the path would stall in its pool are skipped (`stall`).
    """
    concurrencies = sorted(set(concurrencies))
    report = ProbeResult(latency_ms=latency_ms)
    counts = {c: max(requests, per_client * c) for c in concurrencies}
    if progress is not None:
        progress.reset(total=len(paths) * sum(counts.values()))
    try:
        async with lab_client(app, raise_app_exceptions=False) as client:
            # The thread watch first: its clock must start before the simulated wait.
            with (
                _gc_frozen(),
                watch_statement_threads() as seen,
                latency_everywhere(latency_ms) as slowed,
            ):
                for path in paths:
                    done: list[ProbePoint] = []
                    for c in concurrencies:
                        why = stall(done, c)
                        if why is not None:
                            report.skipped.setdefault(path, []).append(why)
                            if progress is not None:
                                progress.update(counts[c])
                            continue
                        if progress is not None:
                            progress.set_description(f"{path} C={c}")
                        if warmup:  # unwatched, so statements per request are the run's
                            n = min(c, warmup)
                            await run_load(client, path, requests=n, concurrency=n, ids=ids)
                        seen.take()  # what ran between points belongs to none
                        with watch_engine(None) as conns:
                            result = await run_load(
                                client,
                                path,
                                requests=counts[c],
                                concurrency=c,
                                progress=progress,
                                ids=ids,
                            )
                        done.append(ProbePoint(path, result, conns, seen.take()))
                    report.points.extend(done)
                report.unsupported = set(slowed.unsupported)
    finally:
        if progress is not None:
            progress.close()
    return report
