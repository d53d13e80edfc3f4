"""What the lab's instruments cost: the shop app served bare against `create_app`'s copy.

Every number the lab shows comes from its instrumented copy of the shop app (session ledger,
``Server-Timing``, the request group that lets a cancelled request finish). At L = 0 a request is
all CPU work, so whatever the instruments add is a share of the throughput the notebooks report.
`instruments_cost` measures that share: the shop app itself, ``labkit.shop.main.app``, and
`create_app`'s app, on one new SQLite file, loaded in turns on each setup's read route.

The shop app reads `DATABASE_URL` once, at import, and builds its engines from it. So the
measurement runs in a process of its own (``python -m labkit.bench.instruments_cost``), started
with `DATABASE_URL` naming the new file: there the shop app is exactly what
``uvicorn labkit.shop.main:app`` would serve, its own engines and dependencies, nothing
overridden. (Overriding its session dependencies in this process would point it at the file,
but FastAPI then builds each overridden dependency's description again on every request, a cost
the bare app would carry and the shop app's does not.) Both apps are driven in that process, on
one event loop, through the same in-process transport, so they differ only in the instruments.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from labkit.bench.results import Tabular
from labkit.bench.setups import SETUPS


@dataclass(frozen=True)
class SetupCost:
    """One setup's throughput, bare and instrumented, in each round (requests per second)."""

    setup: str
    bare_rps: tuple[float, ...]
    instrumented_rps: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        """Instrumented over bare, round by round."""
        return tuple(i / b for i, b in zip(self.instrumented_rps, self.bare_rps, strict=True))

    @property
    def ratio(self) -> float:
        """The median round's ratio: one slow moment of the machine moves one round, not it."""
        return statistics.median(self.ratios)


@dataclass(frozen=True)
class InstrumentsCost(Tabular):
    """What `instruments_cost` measured: per setup, bare and instrumented throughput."""

    concurrency: int
    requests: int
    rounds: int
    setups: tuple[SetupCost, ...]

    def ratio(self, setup: str) -> float:
        """`setup`'s median ratio, instrumented over bare."""
        for cost in self.setups:
            if cost.setup == setup:
                return cost.ratio
        raise KeyError(f"no setup {setup!r} in this measurement")

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "setup": cost.setup,
                "C": self.concurrency,
                "bare_rps": statistics.median(cost.bare_rps),
                "instrumented_rps": statistics.median(cost.instrumented_rps),
                "ratio": cost.ratio,
                "ratios": ", ".join(f"{r:.2f}" for r in cost.ratios),
            }
            for cost in self.setups
        ]


async def instruments_cost(
    setups: Sequence[str] = SETUPS,
    *,
    requests: int = 150,
    concurrency: int = 10,
    rounds: int = 3,
    slices: int = 5,
    warmup: int = 20,
) -> InstrumentsCost:
    """Each setup's read route (``/SETUP/users/{id}``) at L = 0, bare and instrumented, in turns.

    Runs `measure_here` in a new process whose `DATABASE_URL` names a new SQLite file (removed
    afterwards), and waits for it without blocking the event loop. The sizes are its own: raise
    `requests` and `rounds` for steadier numbers.
    """
    sizes = {
        "setups": list(setups),
        "requests": requests,
        "concurrency": concurrency,
        "rounds": rounds,
        "slices": slices,
        "warmup": warmup,
    }
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'instruments_cost.db'}"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            json.dumps(sizes),
            env={**os.environ, "DATABASE_URL": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the measurement failed:\n{err.decode(errors='replace')}")
    measured: dict[str, dict[str, list[float]]] = json.loads(out)
    return InstrumentsCost(
        concurrency,
        requests,
        rounds,
        tuple(
            SetupCost(setup, tuple(rps["bare"]), tuple(rps["instrumented"]))
            for setup, rps in measured.items()
        ),
    )


async def seconds_for(
    client: httpx.AsyncClient, path_of: Callable[[int], str], requests: int, concurrency: int
) -> float:
    """How long `concurrency` clients take to send `requests` requests, each client sending its
    next as soon as its last is answered. A failed request raises.

    Nothing else runs meanwhile (no lag probe, no engine watch, unlike `run_load`), so the
    time is the app's and the client's alone.
    """
    numbers = iter(range(requests))

    async def one_client() -> None:
        for i in numbers:
            response = await client.get(path_of(i))
            response.raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(min(concurrency, requests))))
    return time.perf_counter() - start


async def measure_here(
    setups: Sequence[str],
    *,
    requests: int,
    concurrency: int,
    rounds: int,
    slices: int,
    warmup: int,
) -> dict[str, dict[str, list[float]]]:
    """Throughput per setup, app (``bare``, ``instrumented``) and round, on `DATABASE_URL`.

    Both apps serve the database `DATABASE_URL` names; the instrumented app's start creates and
    seeds it. In each of `rounds` rounds each setup gets `requests` requests from `concurrency`
    clients on each app, sent in `slices` slices, the two apps taking turns slice by slice (the
    one going first alternating), so that a busy moment of a shared machine falls on both
    alike. A round's throughput for an app is the median of its slices': a slice that another
    program slowed moves it less than it would a total. Each app first gets `warmup` requests
    per setup, unmeasured, so pools and threads exist before the clock starts.
    """
    # Imported here: the shop app reads DATABASE_URL when it is imported, and only the
    # measuring process has the one this measurement needs.
    from labkit.app.client import lab_client
    from labkit.app.create import create_app
    from labkit.bench.load import route_for
    from labkit.shop import main as shop_main

    if min(requests, concurrency, rounds, slices) < 1 or slices > requests:
        raise ValueError("sizes must be at least 1, and slices at most requests")
    per_slice = [requests // slices + (i < requests % slices) for i in range(slices)]
    rps: dict[str, dict[str, list[float]]] = {
        setup: {"bare": [], "instrumented": []} for setup in setups
    }
    async with (
        lab_client(create_app()) as instrumented,  # first: its start seeds the database
        lab_client(shop_main.app) as bare,
    ):
        clients = {"bare": bare, "instrumented": instrumented}
        paths = {setup: route_for(setup) for setup in setups}
        for setup in setups:
            for client in clients.values():
                await seconds_for(client, paths[setup], warmup, concurrency)
        for _round in range(rounds):
            for setup in setups:
                rates: dict[str, list[float]] = {side: [] for side in clients}
                for i, n in enumerate(per_slice):
                    for side in list(clients)[:: 1 if i % 2 == 0 else -1]:
                        seconds = await seconds_for(clients[side], paths[setup], n, concurrency)
                        rates[side].append(n / seconds)
                for side, rate in rates.items():
                    rps[setup][side].append(statistics.median(rate))
    return rps


def main(argv: Sequence[str]) -> None:
    """Run `measure_here` with the sizes given as JSON; print its result as JSON."""
    sizes = json.loads(argv[0])
    print(json.dumps(asyncio.run(measure_here(sizes.pop("setups"), **sizes))))


if __name__ == "__main__":
    main(sys.argv[1:])
