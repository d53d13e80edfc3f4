"""Experiments of many load runs: a grid of setups x concurrency x latency, and calibration.

`calibrate` measures each setup's CPU time per request, the model's one input; `run_grid` runs
every point on a fresh instrumented app per latency and returns a `GridResult` of `LoadResult`s
with the model to judge them by; `take_turns` runs things in alternating rounds, so a busy
second on a shared machine slows every run alike; `GridResult.off_the_model` names the points
far from the model's bound, either way, which `run_grid(recheck=...)` measures again, keeping
the median run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from sqlalchemy.engine import URL

from labkit.app.client import lab_client
from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions
from labkit.bench.load import run_load
from labkit.bench.model import ANYIO_THREADS, ThroughputModel
from labkit.bench.results import LoadResult, Tabular, merge
from labkit.bench.setups import SETUPS, setup_named

if TYPE_CHECKING:
    from tqdm import tqdm  # a progress bar: tqdm.auto's, a widget in a notebook

OFF_THE_MODEL = 0.55
"""A point under this share of the model's bound, or over its inverse (1.8 times the bound), is
off the model: measured again when asked.

Far under, a slow moment of the machine (another program, a pause of this process) may have
taken the run's time; far over, one may have slowed the calibration the bound comes from, or
the model may be wrong. Either way one more run of the point cannot say which is typical, so
`run_grid` measures it twice more and keeps the median of the three runs: a run moved by a slow
moment is outvoted, whichever side of the model it fell on, and a point the model gets wrong
stays off it.
"""

Key = TypeVar("Key", bound=Hashable)
"""What names a run in `take_turns`: a grid point, a driver's name, ..."""


@dataclass
class GridResult(Tabular):
    """Many `LoadResult`s (setups x concurrency x latency) and the model to judge them by."""

    SHOWN = (*LoadResult.SHOWN, "model_rps", "vs_model", "limit")

    results: list[LoadResult] = field(default_factory=list)
    model: ThroughputModel | None = None
    remeasured: dict[tuple[str, int, float], list[LoadResult]] = field(default_factory=dict)
    """Every run of each point measured again (see `run_grid`), the first one first."""

    def __iter__(self) -> Iterator[LoadResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def get(self, setup: str, concurrency: int, latency_ms: float | None = None) -> LoadResult:
        """The one result for this point (any latency if the grid has only one)."""
        found = [
            r
            for r in self.results
            if r.setup == setup
            and r.concurrency == concurrency
            and (latency_ms is None or r.latency_ms == latency_ms)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} results for {setup} C={concurrency} L={latency_ms}")
        return found[0]

    def model_rps(self, result: LoadResult) -> float:
        """The model's bound for a result's point (NaN if no model, or the setup has none)."""
        if self.model is None or result.setup not in self.model.cpu_s:
            return float("nan")
        return self.model.throughput(result.setup, result.concurrency, result.latency_ms / 1000)

    def vs_model(self, result: LoadResult) -> float:
        """Measured throughput over the model's bound (NaN without a bound)."""
        return result.throughput / self.model_rps(result)

    def with_fastest_s(self) -> GridResult:
        """This grid with its model's ``s`` lowered to the grid's own runs at C = 1, L = 0 (the
        point `calibrate` measures), where they were faster (see `ThroughputModel.with_faster`).
        """
        if self.model is None:
            raise ValueError("this grid has no model: pass run_grid the one calibrate returns")
        measured = {
            r.setup: 1 / r.throughput
            for r in self.results
            if r.concurrency == 1 and r.latency_ms == 0 and r.throughput > 0
        }
        return replace(self, model=self.model.with_faster(measured))

    def off_the_model(self) -> list[LoadResult]:
        """Points under `OFF_THE_MODEL` of the model's bound, or over its inverse.

        Without a model every bound is NaN, so no point is off it.
        """
        return [
            r
            for r in self.results
            if (ratio := self.vs_model(r)) < OFF_THE_MODEL or ratio > 1 / OFF_THE_MODEL
        ]

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for result in self.results:
            row = result.row()
            if self.model is not None:
                modelled = result.setup in self.model.cpu_s
                row["model_rps"] = self.model_rps(result)
                row["vs_model"] = self.vs_model(result) if modelled else float("nan")
                row["limit"] = (
                    self.model.diagnose(
                        setup_named(result.setup), result.concurrency, result.latency_ms / 1000
                    ).limit
                    if modelled
                    else "-"
                )
            rows.append(row)
        # Every row gets every column (a /health row has no engine counts), so CSV lines up.
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return [{c: row.get(c, float("nan")) for c in columns} for row in rows]


def _requests_for(
    model: ThroughputModel | None,
    requests: int | Mapping[str, int] | None,
    seconds: float | None,
    least: int,
    per_client: int,
) -> Callable[[str, int, float], int]:
    """Requests per point: a fixed number (for all setups, or per setup), or enough to last
    about `seconds` by the model.

    At 50 ms per query the blocking setup does about 20 requests a second and the others
    hundreds: a fixed count would make one setup's points take 20 times longer than another's.
    A point gets at least `least` requests, and `per_client` per client: with one request per
    client all start together, and the run never reaches the steady state the model is about.
    """
    if (requests is None) == (seconds is None):
        raise ValueError("give either requests (per point) or seconds (per point), not both")
    if seconds is not None and model is None:
        raise ValueError("sizing points by seconds needs the model (from calibrate)")

    def count(setup: str, concurrency: int, latency_ms: float) -> int:
        if isinstance(requests, int):
            return requests
        if requests is not None:
            return requests[setup]
        assert model is not None and seconds is not None
        if setup not in model.cpu_s:
            return max(least, per_client * concurrency)
        rate = model.throughput(setup, concurrency, latency_ms / 1000)
        return max(least, per_client * concurrency, round(rate * seconds))

    return count


async def calibrate(
    database_url: str | URL | None,
    setups: Iterable[str] = SETUPS,
    *,
    requests: int = 100,
    repeats: int = 5,
    options: EngineOptions | None = None,
) -> ThroughputModel:
    """Measure each setup's CPU time per request ``s`` (at L = 0, C = 1): the model's one input.

    With one client and no database wait, a request's response time is all work in this
    process, so ``s = 1 / throughput``. Other programs on the machine can only make a run
    slower, never faster, so the fastest of `repeats` runs is kept (the setups take turns).
    The model gets the pool size of `options` (their latency is set to 0).
    """
    options = replace(options or EngineOptions(), latency_ms=0.0)
    app = create_app(database_url, options)
    runs: dict[str, list[float]] = {setup: [] for setup in setups}
    async with lab_client(app) as client:
        for _repeat in range(repeats):  # the setups take turns, so a busy second hits them all
            for setup in runs:
                run = await run_load(client, setup, requests=requests, concurrency=1, warmup=10)
                runs[setup].append(1 / run.throughput)
    cpu_s = {setup: min(times) for setup, times in runs.items()}
    return ThroughputModel(cpu_s, pool=options.pool)


async def run_grid(
    database_url: str | URL | None,
    setups: Sequence[str],
    concurrencies: Sequence[int] | Mapping[str, Sequence[int]],
    latencies_ms: Sequence[float],
    *,
    requests: int | Mapping[str, int] | None = None,
    seconds: float | None = None,
    least: int = 10,
    per_client: int = 3,
    model: ThroughputModel | None = None,
    threads: int | None = None,
    health_every_s: float | None = None,
    warmup: int = 5,
    rounds: int = 1,
    progress: tqdm[Any] | None = None,
    options: EngineOptions | None = None,
    recheck: int = 0,
    say: Callable[[str], None] = print,
) -> GridResult:
    """Every setup at every concurrency and latency, on one app per latency.

    `options` are the engines' (pool size, ...); their `latency_ms` is each latency in turn.

    `concurrencies` is one list for all setups, or a list per setup (the blocking setup
    deadlocks above the pool size, so a grid may stop it earlier). Each point has `requests`
    requests (one number, or one per setup: ``/health`` answers several times faster than any
    setup, and needs as many times the requests to run as long), or enough to last about
    `seconds` by the model (see `_requests_for`), and starts with `warmup` unmeasured requests
    (at most one per client), so the pool has connections and the threads exist before the
    clock starts (only in the first round: later rounds find them ready). `model` (from
    `calibrate`) is set to this grid's pool size and thread limit and kept with it.

    With `rounds` > 1 each point is run in that many slices, the setups taking turns, and the
    slices merged (see `take_turns`).

    With `recheck` > 0, the points off the model (`GridResult.off_the_model`, either side of its
    bound) are measured `recheck` more times, and the grid keeps each one's median run (2 gives
    the median of three). `say` gets one line saying which points, each run's share of the bound,
    and the one kept; `GridResult.remeasured` keeps every run.
    """
    options = options or EngineOptions()
    per_setup = (
        {s: list(concurrencies[s]) for s in setups}
        if isinstance(concurrencies, Mapping)
        else {s: list(concurrencies) for s in setups}
    )
    grid = GridResult()
    if model is not None:
        grid.model = model.with_limits(pool=options.pool, threads=threads or ANYIO_THREADS)
    count = _requests_for(grid.model, requests, seconds, least, per_client)
    counts = {
        (s, c, latency): count(s, c, latency)
        for latency in latencies_ms
        for s in setups
        for c in per_setup[s]
    }
    slices = {point: -(-n // rounds) for point, n in counts.items()}  # requests per round
    if progress is not None:
        progress.reset(total=sum(slices.values()) * rounds)

    async def one_slice(
        client: httpx.AsyncClient, app: LabApp, point: tuple[str, int, float], round_: int
    ) -> LoadResult:
        setup, c, latency = point
        if progress is not None:
            progress.set_description(f"{setup} C={c} L={latency:g} ms")
        return await run_load(
            client,
            setup,
            requests=slices[point],
            concurrency=c,
            app=app,
            warmup=min(c, warmup) if round_ == 0 else 0,
            health_every_s=health_every_s,
            progress=progress,
        )

    async def measure(
        points: Sequence[tuple[str, int, float]],
    ) -> dict[tuple[str, int, float], LoadResult]:
        """Run these points, one fresh app per latency among them."""
        measured: dict[tuple[str, int, float], LoadResult] = {}
        for latency in dict.fromkeys(point[2] for point in points):
            app = create_app(database_url, replace(options, latency_ms=latency), threads=threads)
            async with lab_client(app) as client:
                slice_of = {
                    point: partial(one_slice, client, app, point)
                    for point in points
                    if point[2] == latency
                }
                measured.update(await take_turns(slice_of, rounds))
        return measured

    try:
        grid.results = list((await measure(list(counts))).values())
        off = grid.off_the_model() if recheck else []
        if off:
            points = [_point(r) for r in off]
            grid.remeasured = {_point(r): [r] for r in off}
            if progress is not None:
                progress.reset(total=sum(slices[point] for point in points) * rounds * recheck)
            for _ in range(recheck):
                for point, run in (await measure(points)).items():
                    grid.remeasured[point].append(run)
            kept = {point: median_run(runs) for point, runs in grid.remeasured.items()}
            grid.results = [kept.get(_point(r), r) for r in grid.results]
            say(_remeasured_line(grid, recheck))
    finally:
        if progress is not None:
            progress.close()
    return grid


def median_run(runs: Sequence[LoadResult]) -> LoadResult:
    """The run with the median throughput (of an even number, the lower of the middle two)."""
    return sorted(runs, key=lambda run: run.throughput)[(len(runs) - 1) // 2]


def _remeasured_line(grid: GridResult, recheck: int) -> str:
    """What `run_grid` did about the points off the model, and what each one's runs gave."""
    points = "; ".join(
        f"{setup} C={c} L={latency:g} ms at "
        + ", ".join(f"{grid.vs_model(run):.0%}" for run in runs)
        + f", kept {grid.vs_model(median_run(runs)):.0%}"
        for (setup, c, latency), runs in grid.remeasured.items()
    )
    return (
        f"off the model (under {OFF_THE_MODEL:.0%} of its bound, or over "
        f"{1 / OFF_THE_MODEL:.0%}), so measured {recheck} more times and the median run "
        f"kept: {points}"
    )


def _point(result: LoadResult) -> tuple[str, int, float]:
    return result.setup, result.concurrency, result.latency_ms


async def take_turns(
    runs: Mapping[Key, Callable[[int], Awaitable[LoadResult]]], rounds: int
) -> dict[Key, LoadResult]:
    """Run each of `runs` in `rounds` slices, taking turns, and merge each one's slices.

    Each callable is given the round's number (0 first), so it can warm up in the first round
    only. Taking turns means other programs on a shared machine slow every run alike, instead
    of whichever happened to run during a busy second.
    """
    slices: dict[Key, list[LoadResult]] = {key: [] for key in runs}
    for round_ in range(rounds):
        for key, run in runs.items():
            slices[key].append(await run(round_))
    return {key: merge(parts) for key, parts in slices.items()}
