"""Throughput against worker processes: measured, and the model extended per process.

Each uvicorn worker is a process with its own event loop, threads and pool, and its own
interpreter lock. With W workers sharing C clients (the kernel hands each new connection to
one of them), the model of labkit.bench.model holds per process, and adds up:

    X <= min(sum over workers of min(C_w, pool) / (L + s), min(W, cores) / s)

- ``C_w``: the clients worker w serves (the kernel's split, measured); each worker's clients
  wait on its own pool (the async setup: a waiting request holds a connection, no thread);
- ``min(W, cores) / s``: each worker runs its Python on one core at a time, and there are only
  so many cores. ``s`` is one worker's CPU per request, measured at L = 0.

What the model leaves out is measured beside it: how busy the machine's cores were, and how
long the server's processes waited for one. The database and the load driver run on the same
cores, and a worker cannot use a core they hold. A process that waits for a core spends no CPU
meanwhile, so the wait shows in neither `s` nor the CPU per request: the kernel counts it
apart (Linux's scheduler statistics, ``/proc/PID/task/TID/schedstat``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import URL

from labkit.app.databases import EngineOptions
from labkit.app.serve import uvicorn_process
from labkit.bench.model import Limit, ThroughputModel
from labkit.bench.results import Tabular
from labkit.bench.socket_load import SocketLoad, socket_load

SETUP = "async"


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup's CPU quota
    (a container, Binder) where one is set. ``os.cpu_count()`` counts the host's."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores or 1
    if quota != "max":
        cores = min(cores or 1, max(1, math.ceil(int(quota) / int(period))))
    return cores or 1


@dataclass(frozen=True)
class WorkersBound:
    """labkit.bench.model's `ThroughputModel` over W workers: the async setup's waiting line
    for each process, on its own pool, added up, and the CPU's line over the cores the
    processes may use. Not a second model: `model` (``s`` and the pool) and its ``C_eff`` rule
    are the one model's; what this adds is the clients' split, and the cores.

    Looser than each process's own bound added up (``min(C_eff_w / (L + s), 1 / s)`` for each
    worker): where the split is uneven, it counts for the busy workers the CPU a worker with
    few clients leaves idle, though each process runs on one core at a time. A bound is given
    the clients each worker serves (`split`): a keep-alive connection stays with the worker
    that accepted it, and the kernel does not deal them out evenly.
    """

    model: ThroughputModel
    cores: int = field(default_factory=lambda: available_cores())

    @classmethod
    def calibrated(cls, points: Sequence[WorkersPoint], pool: int) -> WorkersBound:
        """The bound from the runs at L = 0: the least CPU per request any of them spent.

        Other programs, a cold cache or a busy second can only make a run spend more, and the
        same code served the same requests in each: a bound takes the cheapest. (The run of one
        worker has read anywhere from 0.8 to 1.6 times what two workers spent per request.)
        """
        at_zero = [point.server_cpu_ms for point in points if point.latency_ms == 0]
        if not at_zero:
            raise ValueError("calibrating needs a run at L = 0")
        return cls(ThroughputModel({SETUP: min(at_zero) / 1000}, pool=pool))

    @property
    def s(self) -> float:
        """A worker's CPU seconds per request."""
        return self.model.cpu_s[SETUP]

    def bounds(self, split: Sequence[int], latency_s: float) -> dict[Limit, float]:
        waiting = sum(self.model.effective_concurrency(SETUP, clients) for clients in split)
        limit: Limit = "pool" if all(clients >= self.model.pool for clients in split) else "clients"
        return {
            limit: waiting / (latency_s + self.s),
            "cpu": min(len(split), self.cores) / self.s,
        }

    def throughput(self, split: Sequence[int], latency_s: float) -> float:
        return min(self.bounds(split, latency_s).values())

    def limit(self, split: Sequence[int], latency_s: float) -> Limit:
        bounds = self.bounds(split, latency_s)
        return min(bounds, key=bounds.__getitem__)


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds spent during a block: by the server's processes, and by the whole machine;
    and how long the server's processes were ready to run but waited for a core."""

    server_s: float
    machine_s: float
    wall_s: float
    server_wait_s: float | None = None
    """Seconds the server's threads spent runnable in the kernel's run queue, added up; None
    where the system does not say (not Linux)."""

    @property
    def machine_busy(self) -> float:
        """The share of all the machine's cores that was busy, from 0 to 1."""
        return self.machine_s / (self.wall_s * (psutil.cpu_count() or 1))  # all, not ours


def _busy_s(times: Any) -> float:
    """CPU seconds the machine's cores were busy since boot (psutil's `cpu_times()`)."""
    busy: float = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    return busy


def run_queue_waits_s(processes: Sequence[psutil.Process]) -> dict[tuple[int, int], float]:
    """Each thread's time waiting for a core since it started, in seconds, by (pid, thread id):
    the second number of Linux's ``/proc/PID/task/TID/schedstat``. Empty elsewhere."""
    waits: dict[tuple[int, int], float] = {}
    for process in processes:
        try:
            threads = list(Path(f"/proc/{process.pid}/task").iterdir())
        except OSError:
            continue
        for thread in threads:
            try:
                _running_ns, waiting_ns, *_ = (thread / "schedstat").read_text().split()
            except (OSError, ValueError):
                continue  # the thread has ended
            waits[process.pid, int(thread.name)] = int(waiting_ns) / 1e9
    return waits


@contextmanager
def cpu_used(processes: Sequence[psutil.Process]) -> Iterator[list[CpuUse]]:
    """Measure the CPU `processes` and the whole machine use during the block, and how long
    `processes` waited for a core; the one `CpuUse` is in the yielded list afterwards."""

    def server_s() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    found: list[CpuUse] = []
    waits0 = run_queue_waits_s(processes)
    server0, machine0, wall0 = server_s(), _busy_s(psutil.cpu_times()), time.monotonic()
    yield found
    wall = time.monotonic() - wall0
    server, machine = server_s() - server0, _busy_s(psutil.cpu_times()) - machine0
    waits = run_queue_waits_s(processes)
    # a thread started during the block waited only during it
    waited = sum(wait - waits0.get(thread, 0.0) for thread, wait in waits.items())
    found.append(CpuUse(server, machine, wall, waited if waits else None))


@dataclass(frozen=True)
class WorkersPoint:
    """One run: W workers at latency L, loaded by C clients, and what it cost."""

    workers: int
    latency_ms: float
    load: SocketLoad
    cpu: CpuUse

    @property
    def server_cpu_ms(self) -> float:
        """CPU of all the server's processes per answered request, in milliseconds."""
        return self.cpu.server_s / max(self.load.ok, 1) * 1000

    @property
    def core_wait_ms(self) -> float:
        """How long the server's processes waited for a core, per answered request, in
        milliseconds (NaN where the system does not say)."""
        if self.cpu.server_wait_s is None:
            return float("nan")
        return self.cpu.server_wait_s / max(self.load.ok, 1) * 1000


async def time_workers(
    url: str | URL,
    workers: Sequence[int],
    latencies_ms: Sequence[float],
    *,
    clients: int,
    pool_size: int,
    seconds: float,
) -> list[WorkersPoint]:
    """The lab's app with W worker processes at each latency, each worker with a pool of
    `pool_size` (no overflow), loaded from this process by `clients` clients for `seconds`."""
    return [
        await load_served(
            url,
            count,
            EngineOptions(latency_ms=latency, pool_size=pool_size, max_overflow=0),
            clients=clients,
            seconds=seconds,
        )
        for count in workers
        for latency in latencies_ms
    ]


async def load_served(
    url: str | URL,
    workers: int,
    options: EngineOptions,
    *,
    clients: int,
    seconds: float,
) -> WorkersPoint:
    """Serve the lab with `workers` processes, each with engines with `options`, warm it up
    (five requests per client: every pool connection opened), then load it with `clients`
    clients for `seconds` (`socket_load`), measuring the CPU it costs."""
    with uvicorn_process(url, options, workers=workers) as server:
        await socket_load(server.url, SETUP, requests=clients * 5, concurrency=clients)
        with cpu_used(server.processes()) as cpu:
            load = await socket_load(server.url, SETUP, seconds=seconds, concurrency=clients)
    return WorkersPoint(workers, options.latency_ms, load, cpu[0])


@dataclass(frozen=True)
class WorkersResult(Tabular):
    """Runs of W workers (`time_workers`), each beside the bound for its clients' split."""

    points: Sequence[WorkersPoint]
    bound: WorkersBound

    def rows(self) -> list[dict[str, Any]]:
        """One row per run: what was measured beside the bound, with the clients' split."""
        rows = []
        for point in self.points:
            split = sorted(point.load.connections_by.values(), reverse=True)
            latency_s = point.latency_ms / 1000
            bound = self.bound.throughput(split, latency_s)
            rows.append(
                {
                    "workers": point.workers,
                    "L_ms": point.latency_ms,
                    "clients": " + ".join(map(str, split)),
                    "ok": point.load.ok,
                    "failed": point.load.failed,
                    "rps": point.load.throughput,
                    "model_rps": bound,
                    "vs_model": point.load.throughput / bound,
                    "limit": self.bound.limit(split, latency_s),
                    "server_cpu_ms": point.server_cpu_ms,
                    "core_wait_ms": point.core_wait_ms,
                    "machine_busy": point.cpu.machine_busy,
                }
            )
        return rows
