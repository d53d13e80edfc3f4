"""Why ``s`` measured in a Jupyter kernel can be larger than in a terminal: the cause, counted.

FastAPI runs ``def`` routes and sync dependencies (the blocking and threadpool setups' `get_db`)
on AnyIO's worker threads. AnyIO keeps a worker for reuse until the *root task* it was started
for ends, and takes as root the task that ``loop.run_until_complete`` runs: under
``asyncio.run`` (a terminal, ``python -m labkit bench``, uvicorn) the main task, which lives as
long as the program. A kernel's loop runs with ``run_forever`` and each cell is a task of its
own, so there is no such task, and AnyIO falls back to the top of the current task's AnyIO task
tree, or to the task itself. A request run in a bare ``asyncio`` task is then its own root: each
request to the blocking and threadpool setups starts a worker thread and stops it when it ends.
That thread's start and stop was the kernel's extra ``s`` (the kernel's own threads, its output
handling, debugpy and the garbage collector add nothing measurable). labkit's
`FinishEveryRequest` therefore runs requests in an AnyIO task group the app's lifespan holds open
(labkit.instruments.finishing), whose host task lives as long as the app.

- `thread_reuse`: measured on the running loop: worker threads started, and time, per task, for
  bare tasks and for tasks in a task group;
- `worker_threads_used`: counted on an app: the worker threads its ``def`` route ran on for
  requests sent one after another.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from labkit.app.client import lab_client
from labkit.instruments.events import listening


@dataclass(frozen=True)
class TaskThreads:
    """One way of running request-like tasks: worker threads started, and seconds, per task."""

    threads_per_task: float
    seconds_per_task: float


async def _tasks_on_threads(tasks: int, group: TaskGroup | None) -> TaskThreads:
    """Run `tasks` tasks one after another, each one call on a worker thread, and count."""
    marks = threading.local()  # new for this call: a thread that has no mark is a new thread

    def new_thread() -> bool:
        new = not getattr(marks, "seen", False)
        marks.seen = True
        return new

    started = 0

    async def one_request(finished: anyio.Event | None = None) -> None:
        nonlocal started
        started += await anyio.to_thread.run_sync(new_thread)
        if finished is not None:
            finished.set()

    start = time.perf_counter()
    for _ in range(tasks):
        if group is None:
            await asyncio.create_task(one_request())
        else:
            finished = anyio.Event()
            group.start_soon(one_request, finished)
            await finished.wait()
    return TaskThreads(started / tasks, (time.perf_counter() - start) / tasks)


async def thread_reuse(tasks: int = 200) -> dict[str, TaskThreads]:
    """Bare ``asyncio`` tasks against tasks in an AnyIO task group held open here, on this loop.

    Each task does what a request to a sync setup does at least once: one call on a worker
    thread. Under ``asyncio.run`` both reuse one worker (about ``1 / tasks`` threads per task);
    in a kernel each bare task starts a thread of its own (1), and the difference in seconds per
    task is what that costs every request. Bare tasks go first: a worker started for the group
    would outlive them and be reused.
    """
    if tasks < 1:
        raise ValueError("tasks must be at least 1")
    bare = await _tasks_on_threads(tasks, None)
    async with anyio.create_task_group() as group:
        grouped = await _tasks_on_threads(tasks, group)
    return {"bare": bare, "grouped": grouped}


async def worker_threads_used(
    app: FastAPI, requests: int = 30, path: str = "/threadpool/users/1"
) -> int:
    """How many worker threads `app`'s sync route at `path` ran on, for `requests` requests sent
    one after another on the running loop: 1 when one thread serves them all, `requests` when
    each starts a thread of its own. (One request before them starts the first thread.)

    Counted, not timed: a thread started per request adds a fraction of a millisecond to a sync
    setup's ``s`` (notebook 05 prints its share), less than two runs on a shared machine can
    differ by anyway.
    """
    seen = threading.local()
    threads = 0

    def count_thread(*_args: Any) -> None:
        nonlocal threads
        if not getattr(seen, "before", False):
            seen.before = True
            threads += 1

    async with lab_client(app) as client:
        (await client.get(path)).raise_for_status()
        with listening([(Engine, "before_cursor_execute", count_thread)]):
            for _ in range(requests):
                (await client.get(path)).raise_for_status()
    return threads
