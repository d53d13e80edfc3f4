"""Why ``s`` measured in a Jupyter kernel can be larger than in a terminal, and what labkit does.

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

- `thread_reuse`: the cause, measured on the running loop: worker threads started, and time, per
  task, for bare tasks and for tasks in a task group;
- `worker_threads_used`: the same cause, counted on an app: the worker threads its ``def``
  route ran on for requests sent one after another;
- `calibrate_in_thread`: `calibrate` on an event loop of its own (``asyncio.run`` in a thread),
  in this process: the terminal's ``s`` from a notebook;
- `calibrate_elsewhere`: `calibrate` in a fresh ``python`` process;
- `compare_calibrations`: the places in alternation, as rows for a table.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from fastapi import FastAPI
from sqlalchemy.engine import URL, Engine, make_url

from ..client import lab_client
from ..instrumented.databases import EngineOptions
from ..instruments.events import listening
from .grid import calibrate
from .model import ThroughputModel
from .setups import SETUPS

PLACES = ("here", "own_loop", "subprocess")
"""Where `compare_calibrations` measures: the caller's loop, a loop of its own, another process."""


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

    Counted, not timed: a thread started per request costs a fifth to a third of a sync setup's
    ``s``, which is about as much as two runs on a shared machine can differ by anyway.
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


async def calibrate_in_thread(
    database_url: str | URL | None,
    setups: Iterable[str] = SETUPS,
    *,
    requests: int = 100,
    repeats: int = 3,
    options: EngineOptions | None = None,
) -> ThroughputModel:
    """`calibrate` under ``asyncio.run`` in a thread: this process, but a loop AnyIO knows.

    The caller's loop goes on meanwhile (a kernel stays responsive); the app, its engines and
    its worker threads all belong to the other loop and end with it.
    """
    measured = calibrate(database_url, setups, requests=requests, repeats=repeats, options=options)
    return await asyncio.to_thread(asyncio.run, measured)  # the coroutine runs on that loop


async def calibrate_elsewhere(
    database_url: str | URL | None,
    setups: Iterable[str] = SETUPS,
    *,
    requests: int = 100,
    repeats: int = 3,
    options: EngineOptions | None = None,
    python: str = sys.executable,
) -> ThroughputModel:
    """`calibrate` in a new ``python`` process, as ``python -m labkit bench`` would measure it.

    The URL travels on the child's stdin, not its command line, where other users of the
    machine could read a password. The process runs in a thread (``subprocess.run``), because a
    kernel's loop on Windows cannot start subprocesses itself. Raises `RuntimeError` with the
    end of the child's stderr if it fails.
    """
    options = options or EngineOptions()
    url = None if database_url is None else make_url(database_url)
    job = {
        "url": None if url is None else url.render_as_string(hide_password=False),
        "setups": list(setups),
        "requests": requests,
        "repeats": repeats,
        "options": asdict(options),
    }
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    done = await asyncio.to_thread(
        subprocess.run,
        [python, "-m", __name__],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"calibration in a subprocess failed: {done.stderr[-2000:]}")
    cpu_s = json.loads(done.stdout.splitlines()[-1])
    return ThroughputModel(cpu_s, pool=options.pool)


@dataclass
class Calibrations:
    """Each setup's ``s`` from each place (`PLACES`), the fastest of its rounds."""

    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # place -> setup -> s

    def ratio(self, setup: str, place: str = "here", to: str = "subprocess") -> float:
        """``s`` measured at `place` over ``s`` measured at `to`."""
        return self.cpu_s[place][setup] / self.cpu_s[to][setup]

    def rows(self) -> list[dict[str, Any]]:
        """One row per setup: ``s`` in ms at each place, and here over the subprocess."""
        setups = dict.fromkeys(s for by_setup in self.cpu_s.values() for s in by_setup)
        rows: list[dict[str, Any]] = []
        for setup in setups:
            row: dict[str, Any] = {"setup": setup}
            row |= {f"{place}_ms": self.cpu_s[place][setup] * 1000 for place in self.cpu_s}
            if "here" in self.cpu_s and "subprocess" in self.cpu_s:
                row["here/subprocess"] = self.ratio(setup)
            rows.append(row)
        return rows


async def compare_calibrations(
    database_url: str | URL | None,
    setups: Iterable[str] = SETUPS,
    *,
    requests: int = 100,
    repeats: int = 3,
    rounds: int = 2,
    options: EngineOptions | None = None,
    places: Sequence[str] = PLACES,
) -> Calibrations:
    """`calibrate` here, on a loop of its own and in a subprocess, taking turns `rounds` times.

    Taking turns means a busy second on a shared machine slows every place alike; as in
    `calibrate`, other programs can only slow a run, so each place keeps its fastest ``s``.
    """
    unknown = [p for p in places if p not in PLACES]
    if unknown:
        raise ValueError(f"unknown places {unknown}; choose from {PLACES}")
    setups = list(setups)
    options = replace(options or EngineOptions(), latency_ms=0.0)
    kwargs: dict[str, Any] = {"requests": requests, "repeats": repeats, "options": options}
    measure = {
        "here": partial(calibrate, database_url, setups, **kwargs),
        "own_loop": partial(calibrate_in_thread, database_url, setups, **kwargs),
        "subprocess": partial(calibrate_elsewhere, database_url, setups, **kwargs),
    }
    result = Calibrations()
    for _round in range(rounds):
        for place in places:
            model = await measure[place]()
            best = result.cpu_s.setdefault(place, dict(model.cpu_s))
            for setup, s in model.cpu_s.items():
                best[setup] = min(best[setup], s)
    return result


def _main() -> None:
    """The subprocess of `calibrate_elsewhere`: a job as JSON on stdin, ``s`` as JSON on stdout."""
    job = json.loads(sys.stdin.read())
    options = EngineOptions(**job.pop("options"))
    model = asyncio.run(calibrate(job.pop("url"), job.pop("setups"), **job, options=options))
    print(json.dumps(dict(model.cpu_s)))


if __name__ == "__main__":
    _main()
