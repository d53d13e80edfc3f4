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
from typing import Literal

from labkit.bench.setups import Holds, Setup, setup_named

ANYIO_THREADS = 40
"""AnyIO's default thread limiter: how many ``def`` routes run at once unless told otherwise."""

DEFAULT_POOL = 5 + 10
"""SQLAlchemy's `QueuePool` default: ``pool_size=5`` plus ``max_overflow=10``."""

Limit = Literal["cpu", "event loop", "pool", "threads", "clients"]
"""What binds a setup's throughput: the CPU's bound ``1 / s``, or what caps ``C_eff``: the
event loop (the blocking setup), the pool, the worker threads, or the clients themselves."""


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

    def with_faster(self, cpu_s: Mapping[str, float]) -> ThroughputModel:
        """The model with each setup's ``s`` lowered to another measurement of it, where that
        one is faster.

        Other programs on the machine can only slow a run, so the fastest measurement of ``s``
        is the best one (`calibrate` keeps the fastest of its repeats for the same reason). A
        calibration caught in a busy second overstates ``s``, and every bound drawn from it is
        too low: a later run at C = 1, L = 0 measures ``s`` again.
        """
        faster = {setup: min(s, cpu_s.get(setup, s)) for setup, s in self.cpu_s.items()}
        return replace(self, cpu_s=faster)

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

    def diagnose(self, setup: Setup, clients: int, latency_s: float) -> Diagnosis:
        """What the model says of `setup` at `clients` clients, each request waiting `latency_s`
        on the database: every rule of the model, asked in one place (see `Diagnosis`)."""
        return Diagnosis(self, setup, clients, latency_s)


@dataclass(frozen=True)
class Diagnosis:
    """The model at one point: `setup` with `clients` clients, each request waiting `latency_s`
    on the database. Each property is one of the model's rules, written only here and worked
    out when asked: the deadlock risk needs neither ``s`` nor ``L``, so a model without CPU
    times (``ThroughputModel(pool=..., threads=...)``) can answer it."""

    model: ThroughputModel
    setup: Setup
    clients: int
    latency_s: float

    @property
    def c_eff(self) -> int:
        """How many of the clients' requests can wait on the database at the same time."""
        return self.model.effective_concurrency(self.setup.name, self.clients)

    @property
    def bound(self) -> float:
        """Requests per second at most: ``min(C_eff / (L + s), 1 / s)``."""
        return self.model.throughput(self.setup.name, self.clients, self.latency_s)

    @property
    def response_time_s(self) -> float:
        """Little's law for a closed system with no think time: ``R = C / X`` seconds."""
        return self.clients / self.bound

    @property
    def limit(self) -> Limit:
        """Which bound binds: the CPU's, else what caps ``C_eff`` here."""
        s = self.model.cpu_s[self.setup.name]
        c_eff = self.c_eff
        if 1 / s <= c_eff / (self.latency_s + s):
            return "cpu"
        if self.setup.holds is Holds.EVENT_LOOP:
            return "event loop"
        if c_eff == self.clients:
            return "clients"
        pool, threads = self.model.pool, self.model.threads
        if self.setup.holds is Holds.THREAD_AND_CONNECTION and threads < min(self.clients, pool):
            return "threads"
        return "pool"

    @property
    def cpu_knee(self) -> float:
        """The ``C_eff`` where the two bounds meet, ``C_eff / (L + s) = 1 / s``: from there on
        the CPU binds, however many requests the setup lets wait at once."""
        s = self.model.cpu_s[self.setup.name]
        return (self.latency_s + s) / s

    @property
    def knee(self) -> float:
        """The concurrency where throughput stops growing with C: the first limit reached, the
        most requests the setup lets wait at once or `cpu_knee`."""
        cap = self.setup.cap(threads=self.model.threads, pool=self.model.pool)
        return min(cap, self.cpu_knee)

    @property
    def may_deadlock(self) -> bool:
        """Where a sync setup can get stuck until ``pool_timeout``, which no bound describes:
        the blocking setup with more clients than connections, the threadpool setup with
        ``threads + pool`` or more (notebook 05 shows both). The async setup only queues."""
        if self.setup.holds is Holds.EVENT_LOOP:
            return self.clients > self.model.pool
        if self.setup.holds is Holds.THREAD_AND_CONNECTION:
            return self.clients >= self.model.threads + self.model.pool
        return False
