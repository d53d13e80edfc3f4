"""Notebook 00's first answer: the three setups measured side by side, in a few seconds.

Each setup gets the same load: `clients` at once, every statement waiting `latency_ms` (the
lab's stand-in for a database across a network), while ``/health`` is polled to see how free the
event loop stays. A second, slower request per setup is looked at halfway through its wait, to
say what it holds then: a pooled connection, a worker thread, the event loop.

The sizes are small so the cell runs in seconds; the differences it shows are several times
larger than a busy machine's noise, so the recommendation below it can assert them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.app.databases import EngineOptions
from labkit.bench.load import run_load
from labkit.bench.results import LoadResult, Tabular
from labkit.bench.setups import SETUP_LIST, setup_named
from labkit.instruments.watch import WhileWaiting, while_waiting

LOOK_AT_MS = 200
"""How long the looked-at request waits on its statement: long enough for a thread of the
process to read, halfway through, what the request holds."""
HEALTH_EVERY_S = 0.05
"""How often ``/health`` is sent during each load: often enough for a median, rarely enough to
add little load of its own."""


def holds_in_words(seen: WhileWaiting) -> str:
    """What one waiting request held, as a reader would list it."""
    held = []
    if "event loop" in seen.waiting_in:
        held.append("the event loop")
    if seen.worker_threads:
        held.append(f"{seen.worker_threads} worker thread" + "s" * (seen.worker_threads > 1))
    held.append(f"{seen.checked_out} connection" + "s" * (seen.checked_out != 1))
    return " + ".join(held)


@dataclass(frozen=True)
class SetupComparison(Tabular):
    """Each setup's throughput under the same load, ``/health``'s wait meanwhile, and what one
    waiting request held."""

    latency_ms: float
    clients: int
    loads: dict[str, LoadResult]
    held: dict[str, WhileWaiting]

    def rps(self, setup: str) -> float:
        """Successful requests per second of `setup`."""
        return self.loads[setup].throughput

    def times_blocking(self, setup: str) -> float:
        """`setup`'s throughput as a multiple of the blocking setup's."""
        return self.rps(setup) / self.rps("blocking")

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "setup": f"/{name}",
                "route": setup_named(name).route,
                "session": setup_named(name).session,
                "requests/s": round(self.rps(name)),
                "times /blocking": round(self.times_blocking(name), 1),
                "/health waits (ms, median)": round(load.health_p50_ms, 1),
                "one waiting request holds": holds_in_words(self.held[name]),
            }
            for name, load in self.loads.items()
        ]

    def _repr_html_(self) -> str:
        return str(self.to_frame().to_html(index=False))

    def __repr__(self) -> str:
        return str(self.to_frame().to_string(index=False))


async def compare_setups(
    url: str, *, latency_ms: float = 20, clients: int = 10, requests: int = 100
) -> SetupComparison:
    """Send `requests` requests from `clients` at once to each setup of an app on `url` whose
    every statement waits `latency_ms`, polling ``/health`` meanwhile; then look at one request
    per setup halfway through a `LOOK_AT_MS` wait. Raise `requests` for steadier numbers."""
    app = create_app(url, EngineOptions(latency_ms=latency_ms))
    slow = create_app(url, EngineOptions(latency_ms=LOOK_AT_MS))
    loads: dict[str, LoadResult] = {}
    held: dict[str, WhileWaiting] = {}
    async with lab_client(app) as client:
        for setup in SETUP_LIST:
            loads[setup.name] = await run_load(
                client,
                setup.name,
                requests=requests,
                concurrency=clients,
                app=app,
                warmup=clients,
                health_every_s=HEALTH_EVERY_S,
            )
    engines: list[Engine | AsyncEngine] = [slow.sync_db.engine, slow.async_db.engine]
    async with lab_client(slow) as client:
        for setup in SETUP_LIST:
            path = f"{setup.prefix}/users/1"
            held[setup.name] = await while_waiting(client, path, engines, LOOK_AT_MS / 2000)
    return SetupComparison(latency_ms, clients, loads, held)
