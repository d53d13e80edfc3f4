"""Probes: small measurements of what a setup does to everything else in the process."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx


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
