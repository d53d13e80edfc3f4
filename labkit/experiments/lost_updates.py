"""Concurrent withdrawals from one balance: how many were answered "done", and how many stuck.

`withdraw_concurrently` sends `requests` withdrawals of one cent to one account from
`concurrency` clients, through one of the routes of `labkit.instrumented.transactions`, and
reads the balance before and after. Every 2xx answer promised one cent taken; the balance says
how many were. The difference is the lost updates. A 409 that asks to be retried (with
``Retry-After``, as the versioned route's conflict does) is retried, as a real client would,
and counted. Given the app's engine, it also times how long each transaction held the row:
from its first statement that locks it (an ``UPDATE``, or a ``SELECT ... FOR UPDATE``) to its
``COMMIT``, the time every other writer of that row waits.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
from sqlalchemy import Engine

from ..instruments.events import listening
from ..instruments.sqllog import outline

MAX_ATTEMPTS = 200
"""How often one withdrawal is retried after a 409 before the client gives up on it."""


@dataclass
class Withdrawals:
    """What one run of `withdraw_concurrently` measured."""

    strategy: str
    requests: int
    concurrency: int
    balance_before: int
    balance_after: int
    elapsed_s: float
    done: int = 0
    """Withdrawals answered 2xx: each promised to take one cent."""
    retries: int = 0
    """409s answered and retried: work done twice, and the reason a retrying route is slower."""
    failed: Counter[str] = field(default_factory=Counter)
    """Withdrawals that never got a 2xx, by their last status (or exception)."""
    held_s: list[float] = field(default_factory=list)
    """Per committed transaction: from its first locking statement to its COMMIT."""

    @property
    def row_busy(self) -> float:
        """The share of the run during which some transaction held the row (NaN if not timed).
        Writers of one row take turns, so it cannot exceed 1; near 1, the row is the limit,
        and throughput is about ``row_busy / mean time held``."""
        return sum(self.held_s) / self.elapsed_s if self.held_s else float("nan")

    @property
    def held_ms(self) -> float:
        """The median time a transaction held the row (NaN if not timed)."""
        return statistics.median(self.held_s) * 1000 if self.held_s else float("nan")

    @property
    def taken(self) -> int:
        """Cents the balance actually lost."""
        return self.balance_before - self.balance_after

    @property
    def lost(self) -> int:
        """Withdrawals answered "done" whose cent is still on the balance."""
        return self.done - self.taken

    @property
    def per_second(self) -> float:
        """Withdrawals answered 2xx per second of wall time, retries included in that time."""
        return self.done / self.elapsed_s

    def row(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "done": self.done,
            "taken": self.taken,
            "lost": self.lost,
            "retries": self.retries,
            "failed": sum(self.failed.values()),
            "per_s": round(self.per_second),
            "held_ms": round(self.held_ms, 1),
            "row_busy": round(self.row_busy, 2),
        }


@lru_cache(maxsize=256)
def _locks_row(statement: str) -> bool:
    """An ``UPDATE`` or a ``SELECT ... FOR UPDATE``. Asked of every statement during a timed run,
    so each text (the same few, over and over) is read once."""
    shape = outline(statement)
    return shape.startswith("UPDATE ") or shape.endswith(" FOR UPDATE")


@contextmanager
def row_holding(engine: Engine) -> Iterator[list[float]]:
    """For the block: how long each transaction on `engine` held what it locked, in seconds,
    from its first ``UPDATE`` or ``SELECT ... FOR UPDATE`` to its COMMIT (listened for after
    any listener already there, so a simulated wait on COMMIT counts)."""
    held: list[float] = []
    locked_at: dict[int, float] = {}

    def statement_done(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _locks_row(statement):
            locked_at.setdefault(id(conn.connection.dbapi_connection), time.perf_counter())

    def commit(conn: Any) -> None:
        since = locked_at.pop(id(conn.connection.dbapi_connection), None)
        if since is not None:
            held.append(time.perf_counter() - since)

    def rollback(conn: Any) -> None:
        locked_at.pop(id(conn.connection.dbapi_connection), None)

    with listening(
        [
            (engine, "after_cursor_execute", statement_done),
            (engine, "commit", commit),
            (engine, "rollback", rollback),
        ]
    ):
        yield held


async def balance_of(client: httpx.AsyncClient, account_id: int) -> int:
    response = await client.get(f"/accounts/{account_id}")
    response.raise_for_status()
    return int(response.json()["balance"])


async def _withdraw_once(
    client: httpx.AsyncClient, path: str, result: Withdrawals, retry_conflicts: bool
) -> None:
    """One withdrawal, retried on a 409 that says ``Retry-After`` while `retry_conflicts` (at most
    `MAX_ATTEMPTS` tries). A 409 without it ("insufficient funds") is final."""
    for _attempt in range(MAX_ATTEMPTS):
        try:
            response = await client.post(path, params={"amount": 1})
        except Exception as exc:  # counted, not raised: a failed request is a measurement
            result.failed[type(exc).__name__] += 1
            return
        if response.is_success:
            result.done += 1
            return
        conflict = response.status_code == 409 and "Retry-After" in response.headers
        if not (conflict and retry_conflicts):
            result.failed[str(response.status_code)] += 1
            return
        result.retries += 1
    result.failed["409"] += 1


async def withdraw_concurrently(
    client: httpx.AsyncClient,
    strategy: str,
    account_id: int,
    *,
    requests: int,
    concurrency: int,
    retry_conflicts: bool = True,
    engine: Engine | None = None,
) -> Withdrawals:
    """Withdraw one cent `requests` times from `concurrency` clients through ``/{strategy}/...``.

    The account must hold at least `requests` cents, so that no refusal is for lack of money.
    `engine`: the app's engine, to time how long each transaction held the row (`row_holding`).
    """
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    before = await balance_of(client, account_id)
    if before < requests:
        raise ValueError(f"account {account_id} holds {before} cents, fewer than {requests}")
    path = f"/{strategy}/accounts/{account_id}/withdrawals"
    result = Withdrawals(strategy, requests, concurrency, before, before, 0.0)
    numbers = iter(range(requests))  # shared: each withdrawal is taken by one client

    async def one_client() -> None:
        for _ in numbers:
            await _withdraw_once(client, path, result, retry_conflicts)

    with row_holding(engine) if engine is not None else nullcontext([]) as held:
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    result.held_s = list(held)
    result.balance_after = await balance_of(client, account_id)
    return result
