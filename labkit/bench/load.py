"""The load driver: N requests at concurrency C against one route of an app.

C asyncio tasks share one `httpx.AsyncClient`: over `httpx.ASGITransport` the app runs in this
process and this event loop; over a socket, in a server elsewhere. Each task sends its next
request as soon as its last one is answered, until N have been sent: a *closed* system of C
clients, the one the model in labkit.bench.model describes. While they run, a lag probe
asks the loop to wake it every millisecond, and, given the app, the setup's engine is watched
(statements, connections) and AnyIO's threadpool sampled.

`run_load` returns a `LoadResult`: data only. labkit.display shows it as a table or a plot.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from labkit.app.create import LabApp
from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.app.seed import seed_users
from labkit.bench.results import LoadResult, succeeded
from labkit.bench.setups import SETUPS, setup_named
from labkit.instruments.server_timing import HEADER, parse_server_timing
from labkit.instruments.watch import (
    LagProbe,
    ThreadGauge,
    poll_health,
    thread_schedule,
    watch_engine,
)

if TYPE_CHECKING:
    from tqdm import tqdm  # a progress bar: tqdm.auto's, a widget in a notebook


LAG_INTERVAL_S = 0.001
"""How often the lag probe asks to be woken during a run: every millisecond."""


def route_for(setup: str) -> Callable[[int], str]:
    """The path of request `i`: ``/SETUP/users/{id}`` for a setup, ``/health`` as it is, or any
    path, where ``{id}`` is replaced by a seed user's id, cycling, so every request finds its
    row. Another app's paths and rows are the probe's (`labkit.probe.request`)."""
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
    count = len(seed_users())
    return lambda i: template.replace("{id}", str(i % count + 1))


@dataclass(frozen=True)
class Sent:
    """What every request of a run sends besides its path: a method, headers and a body.

    The lab's routes take a bare GET; an app people ship wants a token, a POST with JSON, and
    so on (``python -m labkit probe`` builds one from curl's options).
    """

    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


GET = Sent()


def engine_for(app: LabApp, setup: str) -> Engine | AsyncEngine | None:
    """The engine behind a setup's routes in an app from `create_app` (None for other paths)."""
    if setup not in SETUPS:
        return None
    lab: SyncDatabase | AsyncDatabase
    lab = app.async_db if setup_named(setup).uses_async_session else app.sync_db
    return lab.engine


class _Recorder:
    """Where the worker tasks put what they saw (all on the event loop: no locks needed)."""

    def __init__(self, progress: tqdm[Any] | None) -> None:
        self.latencies = array("d")
        self.server_total = array("d")
        self.server_db = array("d")
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.first_body: dict[int, str] = {}
        self.progress = progress

    def response(self, seconds: float, response: httpx.Response) -> None:
        self.latencies.append(seconds)
        self.statuses[response.status_code] += 1
        timing = response.headers.get(HEADER)
        if timing is not None:
            metrics = parse_server_timing(timing)
            self.server_total.append(metrics.get("total", 0.0) / 1000)
            self.server_db.append(metrics.get("db", 0.0) / 1000)
        status = response.status_code
        if not succeeded(status):
            self.reasons[f"{status} {_detail(response)}"] += 1
            if status not in self.first_body:
                self.first_body[status] = response.text
        if self.progress is not None:
            self.progress.update()

    def error(self, exc: Exception) -> None:
        self.errors[type(exc).__name__] += 1
        if self.progress is not None:
            self.progress.update()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:80]
    return str(body.get("detail", body))[:80] if isinstance(body, dict) else str(body)[:80]


async def _send_requests(
    client: httpx.AsyncClient,
    path_of: Callable[[int], str],
    sent: Sent,
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
            response = await client.request(
                sent.method, path, headers=sent.headers, content=sent.body
            )
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
    sent: Sent,
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
        asyncio.create_task(_send_requests(client, path_of, sent, numbers, stop, record))
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
    app: LabApp | None = None,
    warmup: int = 0,
    health_every_s: float | None = None,
    lag_interval_s: float = LAG_INTERVAL_S,
    progress: tqdm[Any] | None = None,
    path_of: Callable[[int], str] | None = None,
    sent: Sent = GET,
) -> LoadResult:
    """Send `requests` GETs to `setup`'s route (see `route_for`) from `concurrency` clients.

    `app`: the lab app behind `client` (`create_app`'s); given, the setup's engine is watched
    too, and the result has the app's latency and pool size. An app the lab did not build, or
    a server elsewhere, is measured from outside: leave `app` out.
    `warmup` requests go first, unmeasured, so the pool has its connections.
    `health_every_s`: also poll ``/health`` that often, to see what the load does to others.
    `path_of`: request `i`'s path, instead of `route_for`'s (`setup` then only names the run);
    `sent`: another method, headers or a body (see `Sent`).
    Failures are counted in the result, never raised; cancelling stops sending and lets the
    requests in flight finish (see `_drive`).
    """
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    path_of = path_of or route_for(setup)
    if warmup:
        await _drive(client, path_of, sent, warmup, min(concurrency, warmup), _Recorder(None))
    record = _Recorder(progress)
    gauge = ThreadGauge()
    engine = engine_for(app, setup) if app is not None else None
    options = app.options if app is not None else None
    stop_health = asyncio.Event()
    health_task = None
    with ExitStack() as stack:
        counts = stack.enter_context(watch_engine(engine)) if engine is not None else None
        async with LagProbe(lag_interval_s, on_wake=gauge.sample) as lag:
            if health_every_s is not None:
                health_task = asyncio.create_task(poll_health(client, health_every_s, stop_health))
            start, cpu_start = time.perf_counter(), time.process_time()
            schedule_start = thread_schedule()
            try:
                await _drive(client, path_of, sent, requests, concurrency, record)
            finally:
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu_start
                schedule_end = thread_schedule()
                stop_health.set()  # the monitor ends after its current request
                health = await health_task if health_task is not None else None
    return LoadResult(
        setup=setup,
        concurrency=concurrency,
        requests=requests,
        latency_ms=options.latency_ms if options else float("nan"),
        elapsed_s=elapsed,
        cpu_s=cpu,
        loop_busy_s=(
            sum(schedule_end) - sum(schedule_start)
            if schedule_start is not None and schedule_end is not None
            else None
        ),
        response_times_s=record.latencies,
        server_total_s=record.server_total,
        server_db_s=record.server_db,
        statuses=record.statuses,
        errors=record.errors,
        reasons=record.reasons,
        first_body=record.first_body,
        lag=lag,
        health_s=health,
        engine=counts,
        peak_threads=gauge.peak,
        thread_limit=gauge.limit,
        pool=options.pool_size + options.max_overflow if options else None,
    )
