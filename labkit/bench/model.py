"""The one model the timing lab measures against: a closed system of C clients.

Each request needs ``s`` seconds of CPU in this process (measured at L = 0, C = 1) and waits
``L`` seconds on the database. Whatever the setup, throughput is bounded by

    X <= min(C_eff / (L + s), 1 / s)

- ``C_eff / (L + s)``: at most ``C_eff`` requests are in progress at once, each taking ``L + s``;
- ``1 / s``: the process has one interpreter lock, so its CPU work runs on one core at a time.

``C_eff``, how many requests can wait on the database *at the same time*, is what the setups
change:

- ``blocking`` (sync Session in ``async def``): 1. The query runs on the event loop and holds
  it for the whole wait, so requests take turns whatever the concurrency;
- ``threadpool`` (sync Session in ``def``): ``min(C, threads, pool)``. Each waiting request
  holds a worker thread (AnyIO's limiter, 40 by default) and a pooled connection;
- ``async`` (AsyncSession): ``min(C, pool)``. A waiting request holds a connection, no thread.

``pool`` is ``pool_size + max_overflow`` (SQLAlchemy's default 5 + 10 = 15). The response time
follows from Little's law: with C clients always waiting on an answer, ``C = X * R``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from labkit.bench.setups import Holds, setup_named

ANYIO_THREADS = 40
"""AnyIO's default thread limiter: how many ``def`` routes run at once unless told otherwise."""

DEFAULT_POOL = 5 + 10
"""SQLAlchemy's `QueuePool` default: ``pool_size=5`` plus ``max_overflow=10``."""


@dataclass(frozen=True)
class ThroughputModel:
    """The model's bounds for each setup, given its CPU time per request and the limits."""

    cpu_s: Mapping[str, float] = field(default_factory=dict)
    pool: int = DEFAULT_POOL
    threads: int = ANYIO_THREADS

    def with_limits(
        self, *, pool: int | None = None, threads: int | None = None
    ) -> ThroughputModel:
        """The same CPU times under another pool size or thread limit."""
        return replace(
            self,
            pool=self.pool if pool is None else pool,
            threads=self.threads if threads is None else threads,
        )

    def effective_concurrency(self, setup: str, concurrency: int) -> int:
        """How many of `concurrency` requests can wait on the database at the same time."""
        return setup_named(setup).effective_concurrency(
            concurrency, threads=self.threads, pool=self.pool
        )

    def throughput(self, setup: str, concurrency: int, latency_s: float) -> float:
        """The bound on requests per second: ``min(C_eff / (L + s), 1 / s)``."""
        s = self.cpu_s[setup]
        c_eff = self.effective_concurrency(setup, concurrency)
        return min(c_eff / (latency_s + s), 1 / s)

    def response_time(self, setup: str, concurrency: int, latency_s: float) -> float:
        """Little's law for a closed system with no think time: ``R = C / X`` seconds."""
        return concurrency / self.throughput(setup, concurrency, latency_s)

    def limit(self, setup: str, concurrency: int, latency_s: float) -> str:
        """Which bound binds: ``cpu``, ``event loop``, ``pool``, ``threads`` or ``clients``."""
        s = self.cpu_s[setup]
        c_eff = self.effective_concurrency(setup, concurrency)
        if 1 / s <= c_eff / (latency_s + s):
            return "cpu"
        holds = setup_named(setup).holds
        if holds is Holds.EVENT_LOOP:
            return "event loop"
        if c_eff == concurrency:
            return "clients"
        if holds is Holds.THREAD_AND_CONNECTION and self.threads < min(concurrency, self.pool):
            return "threads"
        return "pool"

    def may_deadlock(self, setup: str, concurrency: int) -> bool:
        """Where a sync setup can get stuck until ``pool_timeout``, which no bound describes:
        the blocking setup with more clients than connections, the threadpool setup with
        ``threads + pool`` or more (notebook 05 shows both). The async setup only queues."""
        holds = setup_named(setup).holds
        if holds is Holds.EVENT_LOOP:
            return concurrency > self.pool
        if holds is Holds.THREAD_AND_CONNECTION:
            return concurrency >= self.threads + self.pool
        return False

    def knee(self, setup: str, latency_s: float) -> float:
        """The concurrency where throughput stops growing with C: the first limit reached."""
        s = self.cpu_s[setup]
        cap = setup_named(setup).cap(threads=self.threads, pool=self.pool)
        return min(cap, (latency_s + s) / s)  # (L + s) / s: where C / (L + s) = 1 / s
