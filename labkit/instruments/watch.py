"""Probes: small measurements of what a setup does to everything else in the process.

- `health_during`: how long ``/health`` waits when it arrives during one slow request;
- `while_waiting`: what the process holds halfway through one request's wait on the database
  (connections, worker threads, the thread that waits), and `health_during` at that moment;
- `LagProbe`: asks the event loop to wake it every millisecond and records how late it woke
  (a free loop is a fraction of a millisecond late; a blocked one, as late as the block);
- `poll_health`: ``/health`` every few milliseconds while a load runs, each timed from when it
  was due, as a monitor in another process would see it;
- `watch_engine`: statements executed, peak connections checked out, connections opened and
  closed (overflow connections are closed on return and reopened later: reconnect churn), on
  one engine or on every engine in the process;
- `ThreadGauge`: the most AnyIO worker threads busy at once (``def`` routes, sync dependencies);
- `thread_schedule`: how long the calling thread (the event loop's) ran and waited for a core;
- `catch_slow_callbacks`: asyncio's debug mode, which names every callback that held the loop
  longer than a threshold.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, QueuePool

from labkit.instruments.events import listening
from labkit.instruments.latency import threads_in_the_wait
from labkit.instruments.sqllog import capture_sql


async def until(
    condition: Callable[[], bool], *, timeout_s: float = 10.0, every_s: float = 0.005
) -> None:
    """Return once `condition()` holds (`TimeoutError` after `timeout_s`), checking it every
    `every_s`: for what changes on other threads and tasks without telling anyone (a count, a
    pool, a log)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(every_s)


def queue_pool(pool: Pool) -> QueuePool:
    """`pool` as the `QueuePool` it is, whose ``checkedout()`` and ``checkedin()`` count its
    connections: the pool of every engine the lab makes on a database file or a server, sync or
    async. Other pools (``NullPool``, ``StaticPool``) count nothing, and a `TypeError` says so."""
    if not isinstance(pool, QueuePool):
        raise TypeError(f"{type(pool).__name__} does not count its connections; QueuePool does")
    return pool


@dataclass(frozen=True)
class HealthWait:
    """How long ``/health`` took when it arrived during a slow request, and how long that took."""

    health_s: float
    slow_s: float

    @property
    def held_up(self) -> float:
        """The share of the slow request's time that ``/health`` spent waiting (0 to about 1)."""
        return self.health_s / self.slow_s


async def health_during(
    client: httpx.AsyncClient, slow_path: str, arrive_after_s: float = 0.02
) -> HealthWait:
    """Send `slow_path`, then ``/health`` `arrive_after_s` later; time both.

    The health check's clock starts at its planned arrival, as a client in another process would
    start it: while the event loop is blocked nothing in this process can notice it arrived, so
    timing it from when the loop gets round to sending it would hide the very wait we look for.
    """
    start = time.perf_counter()
    slow = asyncio.create_task(client.get(slow_path))
    await asyncio.sleep(arrive_after_s)
    (await client.get("/health")).raise_for_status()
    health_s = time.perf_counter() - (start + arrive_after_s)
    (await slow).raise_for_status()
    return HealthWait(health_s=health_s, slow_s=time.perf_counter() - start)


@dataclass(frozen=True)
class WhileWaiting:
    """What the process held halfway through one request's wait on the database."""

    checked_out: int
    """Connections checked out of the engines' pools."""
    worker_threads: int
    """AnyIO worker threads borrowed (``def`` routes, sync dependencies)."""
    waiting_in: tuple[str, ...]
    """The threads inside the database call: ``event loop``, ``AnyIO worker``, ``aiosqlite
    connection`` (the thread aiosqlite runs for each connection), else the thread's name. Empty
    for a driver that awaits its socket on the loop."""
    health: HealthWait
    """``/health``, sent at the same moment."""


def _thread_kind(name: str, ident: int, loop_thread: int) -> str:
    if ident == loop_thread:
        return "event loop"
    if name == "AnyIO worker thread":
        return "AnyIO worker"
    if name.endswith("(_connection_worker_thread)"):  # aiosqlite's, one per connection
        return "aiosqlite connection"
    return name


async def while_waiting(
    client: httpx.AsyncClient,
    path: str,
    engines: list[Engine | AsyncEngine],
    at_s: float,
) -> WhileWaiting:
    """Send `path`, and `at_s` later (halfway through its wait on the database, say) read what
    the process holds, from a thread of its own: the event loop may be what the request holds,
    and a reader on the loop would only run once the wait is over. ``/health`` is sent at that
    moment too (`health_during`). `engines` are the app's: their pools are counted together.
    """
    loop_thread = threading.get_ident()
    limiter = anyio.to_thread.current_default_thread_limiter()
    pools = [(e.sync_engine if isinstance(e, AsyncEngine) else e).pool for e in engines]
    seen: list[tuple[int, int, tuple[str, ...]]] = []

    def look() -> None:
        waiting = threads_in_the_wait()
        kinds = tuple(_thread_kind(name, ident, loop_thread) for ident, name in waiting.items())
        out = sum(queue_pool(pool).checkedout() for pool in pools)
        seen.append((out, limiter.borrowed_tokens, kinds))

    reader = threading.Timer(at_s, look)
    reader.start()
    try:
        health = await health_during(client, path, arrive_after_s=at_s)
    finally:
        reader.join()
    ((checked_out, worker_threads, waiting_in),) = seen
    return WhileWaiting(checked_out, worker_threads, waiting_in, health)


@dataclass
class LagTrace:
    """The lag probe's record: when it woke (seconds from its start) and how late each time."""

    interval_s: float
    times_s: array[float] = field(default_factory=lambda: array("d"))
    lags_s: array[float] = field(default_factory=lambda: array("d"))


class LagProbe:
    """A task that asks to wake every `interval_s` and records how late each wake-up is.

    A wake-up is late by as long as something else held the loop: the lag is the delay every
    other task in the process (another request, ``/health``, a timer) suffers at that moment.
    `on_wake` runs at each wake-up, so other gauges can sample at the same rate.
    """

    def __init__(
        self, interval_s: float = 0.001, on_wake: Callable[[], None] | None = None
    ) -> None:
        self.trace = LagTrace(interval_s)
        self._on_wake = on_wake
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        interval = self.trace.interval_s
        times, lags = self.trace.times_s, self.trace.lags_s
        start = time.perf_counter()
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(interval)
            woke = time.perf_counter()
            times.append(woke - start)
            lags.append(max(0.0, woke - asked - interval))
            if self._on_wake is not None:
                self._on_wake()

    async def __aenter__(self) -> LagTrace:
        self._task = asyncio.create_task(self._run(), name="labkit-lag-probe")
        return self.trace

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            # Our own cancel of the probe ends here; a cancel of the caller must go on.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


class ThreadGauge:
    """The most AnyIO worker threads borrowed at once (sampled by the lag probe).

    AnyIO's default limiter (40 tokens) admits ``def`` routes and sync dependencies to its
    threadpool; its tokens change only on the event loop, so sampling there misses little.
    Must be created inside the running event loop whose limiter it reads.
    """

    def __init__(self) -> None:
        self._limiter = anyio.to_thread.current_default_thread_limiter()
        self.limit = self._limiter.total_tokens
        self.peak = self._limiter.borrowed_tokens

    def sample(self) -> None:
        self.peak = max(self.peak, self._limiter.borrowed_tokens)


def thread_schedule() -> tuple[float, float] | None:
    """Seconds the calling thread has run on a core, and waited for one, since it started.

    Read from Linux's scheduler statistics (``/proc/thread-self/schedstat``); None elsewhere.
    Called on the event loop, the two tell a loop that always had work (running, or ready and
    waiting for a core that other programs held) from one that sat idle waiting for I/O: what
    the process's CPU time alone cannot, on a machine other programs share.
    """
    try:
        with open("/proc/thread-self/schedstat") as stats:
            running_ns, waiting_ns, *_rest = stats.read().split()
    except OSError:
        return None
    return int(running_ns) / 1e9, int(waiting_ns) / 1e9


@dataclass
class EngineCounts:
    """What one engine did while watched.

    `held_s` adds up how long connections stayed checked out, from checkout to checkin: for a
    request that is from its first query until its session closes, which in FastAPI is after the
    response was sent, so longer than the query itself. The pool can serve at most
    ``pool / mean hold`` requests per second.
    """

    statements: int = 0
    peak_checked_out: int = 0
    opened: int = 0
    closed: int = 0
    checkouts: int = 0
    held_s: float = 0.0

    @property
    def mean_hold_s(self) -> float:
        return self.held_s / self.checkouts if self.checkouts else float("nan")


@contextmanager
def watch_engine(engine: Engine | AsyncEngine | None) -> Iterator[EngineCounts]:
    """Count statements, peak checkouts and new/closed connections of `engine` in the block.

    ``watch_engine(None)`` watches every engine and pool in the process (class-level listeners
    on `Engine` and `Pool`), for an app whose engines the caller has no reference to: the peak
    is then of all connections checked out at once, from any pool. Connections already out
    when the block starts count towards the peak of one engine (its pool knows how many); with
    None they cannot be known, and the peak counts those checked out in the block.
    Pool events fire on whichever thread checks a connection out or in, hence the lock.
    """
    # Pool events are listened for on an engine (SQLAlchemy passes them on to its pool).
    pool_target: Engine | type[Pool] = Pool
    before = 0  # out before the block, and still out
    if engine is not None:
        pool_target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        before = queue_pool(pool_target.pool).checkedout()
    counts = EngineCounts()
    lock = threading.Lock()
    counts.peak_checked_out = before
    since: dict[int, float] = {}  # connection record -> when it was checked out

    def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        with lock:
            since[id(record)] = time.perf_counter()
            counts.peak_checked_out = max(counts.peak_checked_out, before + len(since))

    def checkin(_dbapi: Any, record: Any) -> None:
        nonlocal before
        with lock:
            started = since.pop(id(record), None)
            if started is None:  # checked out before the watch began: not counted
                before = max(0, before - 1)
            else:
                counts.checkouts += 1
                counts.held_s += time.perf_counter() - started

    def connect(*_args: Any) -> None:
        with lock:
            counts.opened += 1

    def close(*_args: Any) -> None:
        with lock:
            counts.closed += 1

    listeners: dict[str, Callable[..., None]] = {
        "checkout": checkout,
        "checkin": checkin,
        "connect": connect,
        "close": close,
    }
    on_pool = [(pool_target, name, fn) for name, fn in listeners.items()]
    with listening(on_pool), capture_sql(engine) as statements:
        try:
            yield counts
        finally:
            counts.statements = len(statements)


async def poll_health(
    client: httpx.AsyncClient, every_s: float, stop: asyncio.Event
) -> array[float]:
    """``/health`` every `every_s` until `stop` is set; each wait is timed from when it was due.

    One monitor, one request at a time: it sleeps `every_s` after each answer. Its clock starts
    when the sleep *should* have ended, so a loop blocked past that moment shows in the wait.
    """
    waits = array("d")
    while not stop.is_set():
        due = time.perf_counter() + every_s
        await asyncio.sleep(every_s)
        if stop.is_set():
            break
        response = await client.get("/health")
        response.raise_for_status()
        waits.append(time.perf_counter() - due)
    return waits


@contextmanager
def collect_log(name: str, level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """Keep what logger `name` says in the block in a list, instead of printing it to stderr."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(name)
    handler = Keep(level)
    saved = (logger.propagate, logger.level)
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved[0]
        logger.setLevel(saved[1])


@dataclass(frozen=True)
class SlowCallback:
    """One report from asyncio's debug mode: a callback (a task's step) held the loop this long."""

    seconds: float
    where: str


_CORO = re.compile(r"coro=<([\w.<>]+)\(")
_NAMED_TASK = re.compile(r"<Task \w+ name='([\w.<>]+\.[\w<>]+)'")
"""A task named for its function: AnyIO names its tasks so, and runs them through a wrapper
coroutine of its own, so the name says where the time went and the coroutine does not."""


def _slow_callback(record: logging.LogRecord) -> SlowCallback | None:
    args = record.args
    if not (isinstance(args, tuple) and len(args) == 2 and "took" in str(record.msg)):
        return None  # another asyncio warning, not a slow callback
    callback, seconds = args
    if not isinstance(seconds, float):  # asyncio's own message gives a float
        return None
    match = _NAMED_TASK.search(str(callback)) or _CORO.search(str(callback))
    return SlowCallback(seconds, match.group(1) if match else "callback")


@contextmanager
def catch_slow_callbacks(
    threshold_s: float = 0.02, loop: asyncio.AbstractEventLoop | None = None
) -> Iterator[list[SlowCallback]]:
    """Turn on asyncio's debug mode for the block; collect its slow-callback warnings.

    With ``loop.set_debug(True)`` asyncio times every callback it runs and logs
    ``Executing <Task ...> took 0.051 seconds`` past ``slow_callback_duration``: the same switch
    as ``PYTHONASYNCIODEBUG=1`` or ``asyncio.run(..., debug=True)`` in your own app. Here each
    warning becomes a `SlowCallback` (the task's coroutine and the time), in the list the
    block gets, once the block ends.
    """
    loop = loop or asyncio.get_running_loop()
    found: list[SlowCallback] = []
    saved = (loop.get_debug(), loop.slow_callback_duration)
    with collect_log("asyncio") as records:
        loop.slow_callback_duration = threshold_s
        loop.set_debug(True)
        try:
            yield found
        finally:
            loop.set_debug(saved[0])
            loop.slow_callback_duration = saved[1]
    found.extend(slow for slow in map(_slow_callback, records) if slow is not None)
