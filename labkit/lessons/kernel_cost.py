"""``s`` in processes of their own, plainly or after ``nest_asyncio.apply()``.

A Jupyter kernel once added a worker thread's start to each of the sync setups' requests: AnyIO
started a thread per request where no task was the root (notebook 05 prints that cost as a share
of ``s``; labkit.lessons.concurrency.thread_reuse counts it, and
labkit.instruments.finishing is the cure). What remains to compare is a notebook's other habit,
``nest_asyncio.apply()``, against a plain ``asyncio.run``, each in a process of its own:

- `CalibratingProcess`: a ``python`` process of its own that runs `calibrate` whenever asked,
  under ``asyncio.run`` or as a notebook cell would after ``nest_asyncio.apply()``;
- `asyncio_origins`: where the parts of asyncio that ``nest_asyncio.apply()`` replaces come from;
- `asyncio_object_costs`: what asyncio itself spends to create and await a task, and a future:
  the part nest_asyncio replaces with pure Python, timed on its own, where a request's ``s`` is
  too noisy to show it;
- `nest_asyncio_cost`: ``s``, `asyncio_object_costs` and `asyncio_origins` in two such
  processes, one with nest_asyncio applied, taking turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from tempfile import TemporaryFile
from types import TracebackType
from typing import IO, Any, Self, TypeVar

from sqlalchemy.engine import URL, make_url

from labkit.app.databases import EngineOptions
from labkit.bench.grid import calibrate
from labkit.bench.model import ThroughputModel
from labkit.bench.results import Tabular
from labkit.bench.setups import SETUPS

T = TypeVar("T")


def _job(
    database_url: str | URL | None,
    setups: Iterable[str],
    *,
    requests: int,
    repeats: int,
    options: EngineOptions,
) -> dict[str, Any]:
    """What a calibrating subprocess is sent on its stdin, as one line of JSON."""
    url = None if database_url is None else make_url(database_url)
    return {
        "url": None if url is None else url.render_as_string(hide_password=False),
        "setups": list(setups),
        "requests": requests,
        "repeats": repeats,
        "options": asdict(options),
    }


def _child_env() -> dict[str, str]:
    """This environment, with labkit importable in the child wherever it was started from."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


@dataclass
class Calibrations:
    """Each setup's ``s`` from each place (a process, named by how it runs), the fastest of its
    rounds: other programs on the machine can only slow a round, never speed it up."""

    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # place -> setup -> s

    def ratio(self, setup: str, place: str, to: str) -> float:
        """``s`` measured at `place` over ``s`` measured at `to`."""
        return self.cpu_s[place][setup] / self.cpu_s[to][setup]

    def keep_fastest(self, place: str, cpu_s: Mapping[str, float]) -> None:
        """Add a round measured at `place`: each setup keeps its fastest ``s`` so far there."""
        best = self.cpu_s.setdefault(place, dict(cpu_s))
        for setup, s in cpu_s.items():
            best[setup] = min(best[setup], s)


RUNNERS = ("asyncio", "nest_asyncio")
"""How a `CalibratingProcess` runs `calibrate`: under ``asyncio.run``, as a terminal does, or as
a notebook cell does after ``nest_asyncio.apply()``: ``asyncio.run`` inside a running loop."""


class CalibratingProcess:
    """A ``python`` process of its own that runs a round of `calibrate` each time it is asked.

    It starts once (imports labkit, applies nest_asyncio if its `runner` says so), so two such
    processes can take turns, a round each, and a busy second on a shared machine slows both
    alike, where two fresh processes one after the other would each pay seconds of start-up in
    between. A round is `calibrate` with one run of `requests` requests per setup, on a new app.
    Use it as ``async with``: leaving the block ends the process.
    """

    def __init__(
        self,
        database_url: str | URL | None,
        setups: Iterable[str] = SETUPS,
        *,
        requests: int = 100,
        options: EngineOptions | None = None,
        runner: str = "asyncio",
        python: str = sys.executable,
    ) -> None:
        if runner not in RUNNERS:
            raise ValueError(f"unknown runner {runner!r}; choose from {RUNNERS}")
        options = replace(options or EngineOptions(), latency_ms=0.0)
        job = _job(database_url, setups, requests=requests, repeats=1, options=options)
        # A file, not a pipe: a pipe nobody reads fills up and stalls the process. Closed on exit.
        self._stderr: IO[str] = TemporaryFile("w+")  # noqa: SIM115
        self._process = subprocess.Popen(
            [python, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_child_env(),
        )
        self._send(json.dumps(job | {"runner": runner}))  # the URL on stdin, never in argv
        self._started = False

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    async def _answer(self) -> str:
        """The process's next line; `RuntimeError` with the end of its stderr if it ended."""
        assert self._process.stdout is not None
        line = await asyncio.to_thread(self._process.stdout.readline)
        if not line:
            await asyncio.to_thread(self._process.wait)
            self._stderr.seek(0)
            raise RuntimeError(f"calibration in a subprocess failed: {self._stderr.read()[-2000:]}")
        return line

    async def ready(self) -> None:
        """Wait until the process has started and can measure (at once if it has said so)."""
        if not self._started:
            await self._answer()  # its first line says it has started
            self._started = True

    async def _ask(self, question: str) -> Any:
        await self.ready()
        self._send(question)
        return json.loads(await self._answer())

    async def calibrate(self) -> dict[str, float]:
        """One round in the process: each setup's ``s``, in seconds."""
        return dict(await self._ask("calibrate"))

    async def asyncio_origins(self) -> dict[str, str]:
        """`asyncio_origins` in the process, on the loop its rounds run on."""
        return dict(await self._ask("asyncio"))

    async def asyncio_object_costs(self) -> dict[str, float]:
        """`asyncio_object_costs` in the process, on the loop its rounds run on."""
        return dict(await self._ask("objects"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the process's stdin, which ends it, and wait for it to be gone."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        await asyncio.to_thread(self._process.wait)
        self._process.stdout.close()
        self._stderr.close()


def asyncio_origins(loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """Where each part of asyncio that ``nest_asyncio.apply()`` replaces is defined, here.

    nest_asyncio 1.6.0 replaces asyncio's ``run``, ``get_event_loop``, ``Task`` and ``Future``,
    the default policy's ``get_event_loop``, and four methods of the class of `loop`: under
    asyncio as shipped they come from ``asyncio`` (``_asyncio`` is its C half), once patched
    from ``nest_asyncio`` (``asyncio.tasks.Task`` is the pure-Python task).
    """
    loop_class, policy_class = type(loop), type(asyncio.get_event_loop_policy())
    parts: dict[str, Any] = {
        "asyncio.run": asyncio.run,
        "asyncio.get_event_loop": asyncio.get_event_loop,
        "asyncio.Task": asyncio.Task,
        "asyncio.Future": asyncio.Future,
        "policy.get_event_loop": policy_class.get_event_loop,
    }
    # By name: the two private methods are BaseEventLoop's, which typeshed does not list.
    for method in ("run_forever", "run_until_complete", "_run_once", "_check_running"):
        parts[f"loop.{method}"] = getattr(loop_class, method)
    return {name: f"{part.__module__}.{part.__qualname__}" for name, part in parts.items()}


OBJECTS_TIMED = 400
"""How many tasks, and how many futures, `asyncio_object_costs` times at a time: a few
milliseconds, so the two processes can take turns often and see the same machine."""

OBJECT_TURNS = 25
"""How many turns each process takes at `asyncio_object_costs` in `nest_asyncio_cost`."""


async def _nothing() -> None:
    return None


async def asyncio_object_costs(count: int = OBJECTS_TIMED) -> dict[str, float]:
    """Seconds asyncio spends, on the running loop, per task and per future made and awaited.

    ``task``: ``await loop.create_task(coro)`` for a coroutine that returns at once; ``future``:
    ``loop.create_future()``, completed by a callback the loop runs, then awaited. Each includes
    the loop's round that completes it (``_run_once``, which nest_asyncio also replaces). Under
    nest_asyncio both are asyncio's pure-Python `Task` and `Future` instead of its C ones.
    The clock is the CPU time of the loop's thread: a time slice the machine gives another
    program in the middle of a batch would add the same milliseconds to a fast batch and a
    slow one, and hide their ratio.
    """
    loop = asyncio.get_running_loop()
    start = time.thread_time()
    for _ in range(count):
        await loop.create_task(_nothing())
    task_s = (time.thread_time() - start) / count
    start = time.thread_time()
    for _ in range(count):
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future
    future_s = (time.thread_time() - start) / count
    return {"task": task_s, "future": future_s}


@dataclass(frozen=True)
class KernelCostResult(Tabular):
    """What `nest_asyncio_cost` found in its two processes, named by their `RUNNERS`."""

    calibrations: Calibrations
    """Each setup's fastest ``s`` in each process (places ``asyncio`` and ``nest_asyncio``)."""
    origins: dict[str, dict[str, str]]
    """`asyncio_origins` in each process, on the loop its rounds ran on."""
    object_costs: dict[str, list[dict[str, float]]]
    """`asyncio_object_costs` in each process, one per turn, in the order they were taken."""

    def ratio(self, setup: str) -> float:
        """``s`` after ``nest_asyncio.apply()`` over ``s`` under plain ``asyncio.run``."""
        return self.calibrations.ratio(setup, "nest_asyncio", "asyncio")

    def object_ratio(self, part: str) -> float:
        """What a ``task`` (or a ``future``) costs after ``nest_asyncio.apply()`` over its plain
        cost: the median over turns, each turn's against the plain turn just before it, which
        ran on the machine as it was then."""
        pairs = zip(self.object_costs["nest_asyncio"], self.object_costs["asyncio"], strict=True)
        return statistics.median(patched[part] / plain[part] for patched, plain in pairs)

    def object_cost(self, part: str, runner: str) -> float:
        """The median of `runner`'s turns: seconds per ``task`` (or ``future``)."""
        return statistics.median(turn[part] for turn in self.object_costs[runner])

    def rows(self) -> list[dict[str, Any]]:
        """One row per part of asyncio: where it comes from in each process."""
        return [
            {"part": part} | {runner: self.origins[runner][part] for runner in RUNNERS}
            for part in self.origins[RUNNERS[0]]
        ]


async def nest_asyncio_cost(
    database_url: str | URL | None,
    setups: Iterable[str] = SETUPS,
    *,
    requests: int = 100,
    rounds: int = 3,
    object_turns: int = OBJECT_TURNS,
    options: EngineOptions | None = None,
    python: str = sys.executable,
) -> KernelCostResult:
    """Each setup's ``s`` in a fresh process under ``asyncio.run``, and in one where it runs as
    a notebook cell's ``nest_asyncio.apply(); asyncio.run(...)`` would run it.

    nest_asyncio patches asyncio for the whole process and for good, so it is applied in a
    process of its own, never in the caller's. The two processes start together, then measure
    a round each in turn, `rounds` times, and each keeps its fastest ``s`` per setup, as
    `labkit.bench.grid.calibrate` does (their first round includes warming up). Before those rounds
    they take `object_turns` turns at `asyncio_object_costs`: an app that has run leaves every
    round of the loop slower by a few microseconds, in both processes, which would blur the
    difference in Task and Future themselves. Each process also reports `asyncio_origins`,
    which shows that the second one measured a patched asyncio.
    """
    setups = list(setups)
    async with contextlib.AsyncExitStack() as stack:
        processes = {
            runner: await stack.enter_async_context(
                CalibratingProcess(
                    database_url,
                    setups,
                    requests=requests,
                    options=options,
                    runner=runner,
                    python=python,
                )
            )
            for runner in RUNNERS
        }
        await asyncio.gather(*(process.ready() for process in processes.values()))
        object_costs: dict[str, list[dict[str, float]]] = {runner: [] for runner in RUNNERS}
        for _turn in range(object_turns):  # first, while no app has run in either process yet
            for runner, process in processes.items():
                object_costs[runner].append(await process.asyncio_object_costs())
        calibrations = Calibrations()
        for _round in range(rounds):
            for runner, process in processes.items():
                calibrations.keep_fastest(runner, await process.calibrate())
        origins = {runner: await process.asyncio_origins() for runner, process in processes.items()}
    return KernelCostResult(calibrations, origins, object_costs)


async def _answer_lines(measure: Callable[[], Awaitable[ThroughputModel]]) -> None:
    """Say ``ready``, then answer each line on stdin with a line of JSON: ``calibrate``, each
    setup's ``s`` from `measure`; ``asyncio``, `asyncio_origins` on the loop running here;
    ``objects``, `asyncio_object_costs` on it."""
    print("ready", flush=True)
    for line in sys.stdin:  # waits for the next line, when the process has nothing else to do
        answer: dict[str, Any]
        if line.strip() == "asyncio":
            answer = asyncio_origins(asyncio.get_running_loop())
        elif line.strip() == "objects":
            answer = await asyncio_object_costs()
        else:
            answer = dict((await measure()).cpu_s)
        print(json.dumps(answer), flush=True)


async def _after_nest_asyncio(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` as a notebook cell does after ``nest_asyncio.apply()``: ``asyncio.run`` called
    while a loop is running (a kernel's; here this process's own), which it then re-enters."""
    import nest_asyncio  # imported here: only this subprocess ever applies it

    nest_asyncio.apply()
    return asyncio.run(coro)


def _main() -> None:
    """The subprocess of `CalibratingProcess`: a job as one line of JSON on stdin, then one
    question per line, each answered with a line of JSON on stdout."""
    job = json.loads(sys.stdin.readline())
    runner = job.pop("runner")
    options = EngineOptions(**job.pop("options"))
    measure = partial(calibrate, job.pop("url"), job.pop("setups"), **job, options=options)
    if runner == "asyncio":
        asyncio.run(_answer_lines(measure))
    else:
        asyncio.run(_after_nest_asyncio(_answer_lines(measure)))


if __name__ == "__main__":
    _main()
