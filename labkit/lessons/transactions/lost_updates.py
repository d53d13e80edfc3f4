"""Concurrent withdrawals from one balance: how many were answered "done", and how many stuck.

`withdraw_concurrently` sends `requests` withdrawals of one cent to one account from
`concurrency` clients, through one of the routes of `labkit.lessons.transactions.accounts`, and
reads the balance before and after. Every 2xx answer promised one cent taken; the balance says
how many were. The difference is the lost updates. A 409 that asks to be retried (with
``Retry-After``, as the versioned route's conflict does) is retried, as a real client would,
and counted. Given the app's engine, it also times when each transaction held the row: from
its first statement that locks it (an ``UPDATE``, or a ``SELECT ... FOR UPDATE``) to its
``COMMIT``, the time every other writer of that row waits. If writers of one row take turns,
those intervals never overlap: `Withdrawals.most_at_once` counts the most open at one moment.

`transfer_at_once` sends a few transfers between balances at once, and compares the balances
with what the answers promised.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
from sqlalchemy import Engine

from labkit.instruments.events import listening
from labkit.instruments.sqllog import outline

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
    held: list[tuple[float, float]] = field(default_factory=list)
    """Per committed transaction, when it held the row: from its first locking statement to its
    COMMIT (``time.perf_counter()`` at both ends)."""

    @property
    def held_s(self) -> list[float]:
        """How long each committed transaction held the row, in seconds."""
        return [end - start for start, end in self.held]

    @property
    def most_at_once(self) -> int:
        """The largest number of transactions that held the row at one moment (0 if not timed).

        1 if writers took turns. Each interval starts once the locking statement has returned
        (the lock is taken) and ends before the COMMIT is sent (the lock is still held), so it
        lies inside the time the database held the lock for that transaction: with a lock that
        admits one writer, no two can overlap.
        """
        # At one instant an end comes before a start: an interval that ends as another begins
        # does not overlap it.
        edges = sorted([(end, -1) for _, end in self.held] + [(start, 1) for start, _ in self.held])
        most = open_now = 0
        for _, step in edges:
            open_now += step
            most = max(most, open_now)
        return most

    @property
    def row_busy(self) -> float:
        """The share of the run during which some transaction held the row (NaN if not timed):
        the time held, added up, over the run's time. By definition ``per_second`` is
        ``row_busy / mean time held`` whenever every "done" committed one hold (so not with
        retried conflicts, whose holds end in a ROLLBACK). Only near 1 is the row the limit."""
        return sum(self.held_s) / self.elapsed_s if self.held else float("nan")

    @property
    def held_ms(self) -> float:
        """The median time a transaction held the row, in ms (NaN if not timed): what a typical
        withdrawal made the others wait, unmoved by the odd one a busy machine held up."""
        return statistics.median(self.held_s) * 1000 if self.held else float("nan")

    @property
    def mean_held_ms(self) -> float:
        """The mean time a transaction held the row, in ms (NaN if not timed): the one that
        ``per_second = row_busy / mean time held`` needs."""
        return statistics.mean(self.held_s) * 1000 if self.held else float("nan")

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
            "most_at_once": self.most_at_once,
            "row_busy": round(self.row_busy, 2),
        }


@lru_cache(maxsize=256)
def _locks_row(statement: str) -> bool:
    """An ``UPDATE`` or a ``SELECT ... FOR UPDATE``. Asked of every statement during a timed run,
    so each text (the same few, over and over) is read once."""
    shape = outline(statement)
    return shape.startswith("UPDATE ") or shape.endswith(" FOR UPDATE")


@contextmanager
def row_holding(engine: Engine) -> Iterator[list[tuple[float, float]]]:
    """For the block: when each transaction on `engine` held what it locked, as ``(start, end)``
    in ``time.perf_counter()`` seconds, from the return of its first ``UPDATE`` or ``SELECT ...
    FOR UPDATE`` to its COMMIT (listened for after any listener already there, so a simulated
    wait on COMMIT counts). A transaction that rolls back is left out."""
    held: list[tuple[float, float]] = []
    locked_at: dict[int, float] = {}

    def statement_done(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _locks_row(statement):
            locked_at.setdefault(id(conn.connection.dbapi_connection), time.perf_counter())

    def commit(conn: Any) -> None:
        since = locked_at.pop(id(conn.connection.dbapi_connection), None)
        if since is not None:
            held.append((since, time.perf_counter()))

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

    holding: AbstractContextManager[list[tuple[float, float]]]
    holding = row_holding(engine) if engine is not None else nullcontext([])
    with holding as held:
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    result.held = list(held)
    result.balance_after = await balance_of(client, account_id)
    return result


@dataclass
class Transfers:
    """What one run of `transfer_at_once` saw."""

    answers: list[str]
    """Each transfer's answer, in the order sent: its status code, or the exception it raised."""
    before: dict[int, int]
    after: dict[int, int]
    promised: dict[int, int]
    """The balances the 2xx answers add up to: `before`, with each of their transfers applied."""
    open: list[tuple[float, float]]
    """When each transaction on the app's engine was open: from its BEGIN to its COMMIT or
    ROLLBACK, in ``time.perf_counter()`` seconds."""

    @property
    def at_once(self) -> bool:
        """The transactions were all open at one moment: each began before any of them ended."""
        return bool(self.open) and max(b for b, _ in self.open) < min(e for _, e in self.open)


@contextmanager
def transactions_open(engine: Engine) -> Iterator[list[tuple[float, float]]]:
    """For the block: when each transaction on `engine` was open, as ``(begin, end)``."""
    spans: list[tuple[float, float]] = []
    began: dict[int, float] = {}

    def begin(conn: Any) -> None:
        began[id(conn)] = time.perf_counter()

    def end(conn: Any) -> None:
        since = began.pop(id(conn), None)
        if since is not None:
            spans.append((since, time.perf_counter()))

    with listening([(engine, "begin", begin), (engine, "commit", end), (engine, "rollback", end)]):
        yield spans


async def transfer_at_once(
    client: httpx.AsyncClient, path: str, transfers: list[tuple[int, int, int]], engine: Engine
) -> Transfers:
    """Send `transfers` (``(from_id, to_id, cents)`` each) to ``POST path`` all at once.

    The balances are read before and after. `engine`, the app's, tells whether the transactions
    overlapped (`Transfers.at_once`): a pair that ran one after the other proves nothing.
    """
    accounts = sorted({i for source, target, _ in transfers for i in (source, target)})
    before = {i: await balance_of(client, i) for i in accounts}

    async def send(source: int, target: int, cents: int) -> str:
        body = {"from_id": source, "to_id": target, "amount": cents}
        try:
            return str((await client.post(path, json=body)).status_code)
        except Exception as exc:  # counted, not raised: a failed request is a measurement
            return type(exc).__name__

    with transactions_open(engine) as spans:
        answers = list(await asyncio.gather(*(send(*transfer) for transfer in transfers)))
    promised = dict(before)
    for (source, target, cents), answer in zip(transfers, answers, strict=True):
        if answer.startswith("2"):
            promised[source] -= cents
            promised[target] += cents
    after = {i: await balance_of(client, i) for i in accounts}
    return Transfers(answers, before, after, promised, list(spans))
