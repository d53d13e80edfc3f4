"""What the probe itself costs in CPU, beside the app it runs in the same process."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from starlette.types import Receive, Scope, Send

from labkit.app.client import BASE_URL
from labkit.bench.load import LAG_INTERVAL_S, run_load
from labkit.bench.results import LoadResult
from labkit.instruments.watch import LagProbe, ThreadGauge
from labkit.probe.request import ProbeRequest


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
