"""The load driver: N requests at concurrency C against one route of an app.

C asyncio tasks share one `httpx.AsyncClient`: over `httpx.ASGITransport` the app runs in this
process and this event loop; over a socket, in a server elsewhere. Each task sends its next
request as soon as its last one is answered, until N have been sent: a *closed* system of C
clients, the one the model in labkit.experiments.model describes. While they run, a lag probe
asks the loop to wake it every millisecond, and, given the app, the setup's engine is watched
(statements, connections) and AnyIO's threadpool sampled.

`run_load` returns a `LoadResult`: data only. labkit.display shows it as a table or a plot.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx
import numpy as np
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ..instrumented.databases import EngineOptions
from ..instruments.probes import (
    EngineCounts,
    LagProbe,
    LagTrace,
    ThreadGauge,
    poll_health,
    watch_engine,
)
from ..instruments.server_timing import HEADER, parse_server_timing
from ..seed import seed_users
from .model import ANYIO_THREADS
from .setups import SETUPS


class Progress(Protocol):
    """What a long run reports its progress to (labkit.display.progress has a bar)."""

    def start(self, total: int) -> None: ...
    def describe(self, label: str) -> None: ...
    def advance(self, done: int = 1) -> None: ...
    def close(self) -> None: ...


def route_for(setup: str) -> Callable[[int], str]:
    """The path of request `i`: ``/SETUP/users/{id}`` for a setup, ``/health`` as it is, or any
    path, where ``{id}`` is replaced by a seed user's id (cycling through them all, so every
    request finds its row)."""
    if setup in SETUPS:
        template = f"/{setup}/users/{{id}}"
    elif setup == "health":
        template = "/health"
    elif setup.startswith("/"):
        template = setup
    else:
        raise ValueError(f"not a setup ({', '.join(SETUPS)}, health) nor a path: {setup!r}")
    if "{id}" not in template:
        return lambda _i: template
    users = len(seed_users())
    return lambda i: template.replace("{id}", str(i % users + 1))


def engine_for(app: FastAPI, setup: str) -> Engine | AsyncEngine | None:
    """The engine a setup's routes use (None for ``/health`` and other paths)."""
    if setup in ("blocking", "threadpool"):
        return app.state.sync_db.engine
    if setup == "async":
        return app.state.async_db.engine
    return None


def _percentile_ms(values: Sequence[float], q: float) -> float:
    """The q-th percentile in milliseconds (linear interpolation), NaN when nothing was measured."""
    if not len(values):
        return float("nan")
    return float(np.percentile(np.frombuffer(values, dtype="d"), q)) * 1000


@dataclass
class LoadResult:
    """One load run: what each request took, what came back, and what the probes saw.

    Throughput counts successful (2xx) responses only: a fast stream of 503s is not capacity.
    Latencies are client-side (from sending to the full answer) for every response, whatever
    its status; `server_total_s` and `server_db_s` come from each response's ``Server-Timing``.
    """

    setup: str
    concurrency: int
    requests: int
    latency_ms: float
    elapsed_s: float
    cpu_s: float
    response_times_s: array[float]
    server_total_s: array[float]
    server_db_s: array[float]
    statuses: Counter[int]
    errors: Counter[str]
    reasons: Counter[str]
    lag: LagTrace
    health_s: array[float] | None = None
    engine: EngineCounts | None = None
    peak_threads: int = 0
    thread_limit: float = ANYIO_THREADS
    pool: int | None = None

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def failed(self) -> int:
        """Requests that did not succeed: non-2xx answers and exceptions."""
        return sum(self.statuses.values()) - self.ok + sum(self.errors.values())

    @property
    def cpu_ms(self) -> float:
        """CPU time of the whole process (all threads) per answered request, in milliseconds."""
        answered = sum(self.statuses.values())
        return self.cpu_s / answered * 1000 if answered else float("nan")

    @property
    def throughput(self) -> float:
        """Successful requests per second of the run's wall time."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def percentile_ms(self, q: float) -> float:
        return _percentile_ms(self.response_times_s, q)

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p95_ms(self) -> float:
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def mean_ms(self) -> float:
        return (
            float(np.mean(self.response_times_s)) * 1000
            if len(self.response_times_s)
            else float("nan")
        )

    @property
    def lag_p50_ms(self) -> float:
        return _percentile_ms(self.lag.lags_s, 50)

    @property
    def lag_p99_ms(self) -> float:
        return _percentile_ms(self.lag.lags_s, 99)

    @property
    def lag_max_ms(self) -> float:
        return max(self.lag.lags_s, default=0.0) * 1000

    @property
    def health_p50_ms(self) -> float:
        return _percentile_ms(self.health_s or array("d"), 50)

    @property
    def health_p99_ms(self) -> float:
        return _percentile_ms(self.health_s or array("d"), 99)

    @property
    def db_share(self) -> float:
        """The share of the clients' waiting spent inside the database (Server-Timing ``db``)."""
        waited = sum(self.response_times_s)
        return sum(self.server_db_s) / waited if waited else float("nan")

    def row(self) -> dict[str, Any]:
        """The run as one table/CSV row."""
        row: dict[str, Any] = {
            "setup": self.setup,
            "C": self.concurrency,
            "L_ms": self.latency_ms,
            "ok": self.ok,
            "failed": self.failed,
            "rps": self.throughput,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "lag_p50_ms": self.lag_p50_ms,
            "lag_p99_ms": self.lag_p99_ms,
            "lag_max_ms": self.lag_max_ms,
        }
        if self.health_s is not None:
            row["health_p50_ms"] = self.health_p50_ms
            row["health_p99_ms"] = self.health_p99_ms
        row["db_share"] = self.db_share
        if self.engine is not None:
            row |= {
                "statements": self.engine.statements,
                "peak_conns": self.engine.peak_checked_out,
                "new_conns": self.engine.opened,
                "hold_ms": self.engine.mean_hold_s * 1000,
            }
        row |= {
            "peak_threads": self.peak_threads,
            "cpu_ms": self.cpu_ms,
            "pool": self.pool if self.pool is not None else float("nan"),
            "threads": self.thread_limit,
        }
        return row

    def rows(self) -> list[dict[str, Any]]:
        """The run as a list of one row, as `Grid.rows` gives many."""
        return [self.row()]


class _Recorder:
    """Where the worker tasks put what they saw (all on the event loop: no locks needed)."""

    def __init__(self, progress: Progress | None) -> None:
        self.latencies = array("d")
        self.server_total = array("d")
        self.server_db = array("d")
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.progress = progress

    def response(self, seconds: float, response: httpx.Response) -> None:
        self.latencies.append(seconds)
        self.statuses[response.status_code] += 1
        timing = response.headers.get(HEADER)
        if timing is not None:
            metrics = parse_server_timing(timing)
            self.server_total.append(metrics.get("total", 0.0) / 1000)
            self.server_db.append(metrics.get("db", 0.0) / 1000)
        if not response.is_success:
            self.reasons[f"{response.status_code} {_detail(response)}"] += 1
        if self.progress is not None:
            self.progress.advance()

    def error(self, exc: Exception) -> None:
        self.errors[type(exc).__name__] += 1
        if self.progress is not None:
            self.progress.advance()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:80]
    return str(body.get("detail", body))[:80] if isinstance(body, dict) else str(body)[:80]


async def _send_requests(
    client: httpx.AsyncClient,
    path_of: Callable[[int], str],
    numbers: Iterator[int],
    stop: asyncio.Event,
    record: _Recorder,
) -> None:
    """One client: send the next request as soon as the last one is answered."""
    for i in numbers:
        if stop.is_set():
            return
        path = path_of(i)
        start = time.perf_counter()
        try:
            response = await client.get(path)
        except Exception as exc:  # counted, not raised: a failed request is a measurement
            record.error(exc)
        else:
            record.response(time.perf_counter() - start, response)
        # A request that never waits (``/health``) would otherwise run all of this client's
        # requests in one step of the loop: let the other clients and the probes have a turn.
        await asyncio.sleep(0)


async def _drive(
    client: httpx.AsyncClient,
    path_of: Callable[[int], str],
    requests: int,
    concurrency: int,
    record: _Recorder,
) -> None:
    """Run `concurrency` clients until `requests` were sent.

    If the caller is cancelled, no new request is sent, and the ones in flight are let finish
    before the cancellation goes on: a request cancelled half-way could leave its session open
    or its connection checked out, and the next experiment would start on a dirty pool.
    """
    numbers = iter(range(requests))  # shared: each request number is taken by one client
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_send_requests(client, path_of, numbers, stop, record))
        for _ in range(concurrency)
    ]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait(tasks)  # a second cancel lands here, and `finally` ends the rest
        raise
    finally:
        for task in tasks:
            task.cancel()


async def run_load(
    client: httpx.AsyncClient,
    setup: str,
    *,
    requests: int,
    concurrency: int,
    app: FastAPI | None = None,
    warmup: int = 0,
    health_every_s: float | None = None,
    lag_interval_s: float = 0.001,
    progress: Progress | None = None,
) -> LoadResult:
    """Send `requests` GETs to `setup`'s route (see `route_for`) from `concurrency` clients.

    `app`: the lab app behind `client`; given, the setup's engine and AnyIO's threadpool are
    watched too. `warmup` requests go first, unmeasured, so the pool has its connections.
    `health_every_s`: also poll ``/health`` that often, to see what the load does to others.
    Failures are counted in the result, never raised; cancelling stops sending and lets the
    requests in flight finish (see `_drive`).
    """
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    path_of = route_for(setup)
    if warmup:
        await _drive(client, path_of, warmup, min(concurrency, warmup), _Recorder(None))
    record = _Recorder(progress)
    gauge = ThreadGauge()
    engine = engine_for(app, setup) if app is not None else None
    options: EngineOptions | None = getattr(app.state, "engine_options", None) if app else None
    stop_health = asyncio.Event()
    health_task = None
    with ExitStack() as stack:
        counts = stack.enter_context(watch_engine(engine)) if engine is not None else None
        async with LagProbe(lag_interval_s, on_wake=gauge.sample) as lag:
            if health_every_s is not None:
                health_task = asyncio.create_task(poll_health(client, health_every_s, stop_health))
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                await _drive(client, path_of, requests, concurrency, record)
            finally:
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu_start
                stop_health.set()  # the monitor ends after its current request
                health = await health_task if health_task is not None else None
    return LoadResult(
        setup=setup,
        concurrency=concurrency,
        requests=requests,
        latency_ms=options.latency_ms if options else float("nan"),
        elapsed_s=elapsed,
        cpu_s=cpu,
        response_times_s=record.latencies,
        server_total_s=record.server_total,
        server_db_s=record.server_db,
        statuses=record.statuses,
        errors=record.errors,
        reasons=record.reasons,
        lag=lag,
        health_s=health,
        engine=counts,
        peak_threads=gauge.peak,
        thread_limit=gauge.limit,
        pool=options.pool_size + options.max_overflow if options else None,
    )


def merge(runs: Sequence[LoadResult]) -> LoadResult:
    """One result from several runs of the same point: requests, time and waits add up.

    Throughput is then total successes over total time, and percentiles are over all requests.
    The lag traces are put end to end, each run's clock starting where the last one stopped.
    """
    first = runs[0]
    if len(runs) == 1:
        return first
    lag = LagTrace(first.lag.interval_s)
    health: array[float] | None = None if first.health_s is None else array("d")
    latencies, server_total, server_db = array("d"), array("d"), array("d")
    offset = 0.0
    for run in runs:
        latencies.extend(run.response_times_s)
        server_total.extend(run.server_total_s)
        server_db.extend(run.server_db_s)
        lag.times_s.extend(t + offset for t in run.lag.times_s)
        lag.lags_s.extend(run.lag.lags_s)
        offset += max(run.elapsed_s, run.lag.times_s[-1] if run.lag.times_s else 0.0)
        if health is not None and run.health_s is not None:
            health.extend(run.health_s)
    engine = None
    if first.engine is not None:
        counts = [run.engine for run in runs if run.engine is not None]
        engine = EngineCounts(
            statements=sum(c.statements for c in counts),
            peak_checked_out=max(c.peak_checked_out for c in counts),
            opened=sum(c.opened for c in counts),
            closed=sum(c.closed for c in counts),
            checkouts=sum(c.checkouts for c in counts),
            held_s=sum(c.held_s for c in counts),
        )
    return replace(
        first,
        requests=sum(run.requests for run in runs),
        elapsed_s=sum(run.elapsed_s for run in runs),
        cpu_s=sum(run.cpu_s for run in runs),
        response_times_s=latencies,
        server_total_s=server_total,
        server_db_s=server_db,
        statuses=sum((run.statuses for run in runs), Counter()),
        errors=sum((run.errors for run in runs), Counter()),
        reasons=sum((run.reasons for run in runs), Counter()),
        lag=lag,
        health_s=health,
        engine=engine,
        peak_threads=max(run.peak_threads for run in runs),
    )


def by_setup(results: Iterable[LoadResult]) -> Mapping[str, list[LoadResult]]:
    """Results grouped by setup, in the order they first appear."""
    groups: dict[str, list[LoadResult]] = {}
    for result in results:
        groups.setdefault(result.setup, []).append(result)
    return groups
