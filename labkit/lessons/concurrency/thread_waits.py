"""Which steps of a request wait for one of AnyIO's worker threads, and which do not.

FastAPI (0.165, the pinned version) runs a sync ``yield`` dependency's setup, a ``def`` route,
and the validation of a ``def`` route's answer with ``run_in_threadpool``: on AnyIO's default
limiter, the 40 threads they all share. The dependency's exit is the exception.
``contextmanager_in_threadpool`` (fastapi/concurrency.py) runs it with a ``CapacityLimiter(1)``
made for that one call, so that a context manager with a pool of its own (a `Session`, and its
pooled connection) never waits for a thread before it can give a connection back.

`thread_waits` shows it on the lab's app with the limiter set to one thread. A ``def`` route's
request (the threadpool setup) is in its query when a request to an ``async def`` route with the
same sync `get_db` (the blocking setup) arrives; then something else asks for the thread and,
once it has it, keeps it for `hold_s`. The limiter serves its waiters first come, first served,
so the order is fixed; only which steps wait is left to FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import anyio.to_thread
import httpx
from sqlalchemy.engine import URL

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.instruments.events import listening
from labkit.instruments.watch import collect_log, until


@dataclass(frozen=True)
class ThreadWaits:
    """When each step came, in seconds after the first request was sent (one clock)."""

    def_query_done: float
    """The ``def`` route's query answered: its route returns, holding no thread after that."""
    taken: float
    """Something else has the only thread, from here ..."""
    freed: float
    """... to here."""
    def_answered: float
    """The ``def`` route's client has its answer: validated in a thread, so after `freed`."""
    loop_route_exit: float
    """The ``async def`` route's dependency exit (its session closed): in a thread of its own."""
    loop_route_answered: float
    later_setup: float
    """A request sent while the thread was taken: its dependency's setup (session opened)."""

    def steps(self) -> dict[str, float]:
        """The steps, earliest first, named for a reader."""
        named = {
            "def route: its query answered, the route returns": self.def_query_done,
            "something else takes the only thread": self.taken,
            "async def route: dependency exit, session closed": self.loop_route_exit,
            "async def route: answered": self.loop_route_answered,
            "the thread is free again": self.freed,
            "request sent meanwhile: dependency setup, session opened": self.later_setup,
            "def route: answered, its answer validated once the thread was free": self.def_answered,
        }
        return dict(sorted(named.items(), key=lambda item: item[1]))


async def thread_waits(database_url: str | URL | None, hold_s: float = 1.0) -> ThreadWaits:
    """Run the three requests and the thread's holder described above, and time their steps.

    The holder is a task that takes the limiter's one token, as a ``def`` route busy for
    `hold_s` would. The ``def`` route's statement, on its worker thread, waits until the
    ``async def`` route's request and the holder are in line for the thread, in that order:
    that fixes the order without relying on how long anything takes.
    """
    app = create_app(database_url, threads=1)
    clock: dict[str, float] = {}
    loop_thread = threading.get_ident()
    others: list[asyncio.Task[None]] = []
    queued = asyncio.Event()

    async def get(client: httpx.AsyncClient, path: str, answered: str) -> None:
        (await client.get(path)).raise_for_status()
        clock[answered] = time.time()

    async def hold(limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            clock["taken"] = time.time()
            await asyncio.sleep(hold_s)
            clock["freed"] = time.time()

    async with lab_client(app) as client:
        limiter = anyio.to_thread.current_default_thread_limiter()

        def waiting(count: int) -> bool:
            return limiter.statistics().tasks_waiting == count

        async def queue_the_others() -> None:
            others.append(asyncio.create_task(get(client, "/blocking/users/2", "loop answered")))
            await until(lambda: waiting(1), timeout_s=5, every_s=0.001)
            others.append(asyncio.create_task(hold(limiter)))
            await until(lambda: waiting(2), timeout_s=5, every_s=0.001)
            queued.set()

        def before_statement(*_args: Any) -> None:
            if threading.get_ident() != loop_thread and not others:
                anyio.from_thread.run(queue_the_others)  # the def route waits here meanwhile

        def after_statement(*_args: Any) -> None:
            if threading.get_ident() != loop_thread:
                clock.setdefault("def query done", time.time())

        engine = app.sync_db.engine
        statements = [
            (engine, "before_cursor_execute", before_statement),
            (engine, "after_cursor_execute", after_statement),
        ]
        with collect_log("labkit.sessions", logging.INFO) as sessions, listening(statements):
            start = time.time()
            in_def = asyncio.create_task(get(client, "/threadpool/users/1", "def answered"))
            await asyncio.wait_for(queued.wait(), timeout=5)
            await others[0]  # the async def route is answered: the thread is still taken
            meanwhile = asyncio.create_task(client.get("/threadpool/users/3"))
            await asyncio.gather(in_def, *others)
            (await meanwhile).raise_for_status()
    # Sessions number themselves as they open: the def route's, the async def route's, and the
    # one of the request sent meanwhile.
    said = [(r.getMessage().rsplit(" ", 1), r.created) for r in sessions]
    opened = {name: at for (name, what), at in said if what == "opened"}
    closed = {name: at for (name, what), at in said if what == "closed"}
    _in_def, on_loop, sent_meanwhile = opened
    return ThreadWaits(
        def_query_done=clock["def query done"] - start,
        taken=clock["taken"] - start,
        freed=clock["freed"] - start,
        def_answered=clock["def answered"] - start,
        loop_route_exit=closed[on_loop] - start,
        loop_route_answered=clock["loop answered"] - start,
        later_setup=opened[sent_meanwhile] - start,
    )
