"""``python -m labkit probe``: the lab's instruments on anyone's FastAPI app, from outside.

A user's app is not built to be measured, and should not have to be: nothing here needs a
reference to its engines or a change to its code. It is imported as uvicorn imports it, started
through its lifespan, and watched through SQLAlchemy's class-level events, which reach every
engine in the process, made at import time or later: `latency_everywhere` (the simulated wait),
`watch_engine(None)` (connections out at once, all pools), `watch_statement_threads` (sync
statements on the event loop's thread: a sync `Session` in an ``async def`` route); AnyIO's
threads are sampled by `run_load`'s `ThreadGauge`, and `threaded_calls` names who used them.
The app's own exceptions are kept with their tracebacks (labkit.probe.serving).

Each path is loaded at each concurrency with the lab's load driver, and each path's points are
judged by the model of labkit.bench.model: what limits how many requests wait on the
database at once (``C_eff``), read here from what was measured rather than from a setup's name.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from labkit.bench.load import run_load
from labkit.bench.results import Tabular
from labkit.instruments.latency import latency_everywhere
from labkit.instruments.statements import watch_statement_threads
from labkit.instruments.watch import watch_engine
from labkit.probe.cost import probe_cost
from labkit.probe.points import ProbePoint, limit_of, stall
from labkit.probe.request import ProbeRequest
from labkit.probe.serving import AppErrors, served
from labkit.probe.thread_users import threaded_calls
from labkit.probe.verdicts import verdict

if TYPE_CHECKING:
    import pandas as pd
    from tqdm import tqdm  # a progress bar: tqdm.auto's, a widget in a notebook

SHARED_COLUMNS = ("ok", "failed", "rps", "p50_ms", "p99_ms", "lag_p99_ms")
"""The columns a probe's rows take from the load driver's `LoadResult.row`."""


@dataclass
class ProbeResult(Tabular):
    """Every point of a probe, in the order run (path by path, concurrency rising)."""

    SHOWN = (
        *("path", "C", "ok", "failed", "rps", "p50_ms", "p99_ms", "lag_p99_ms", "stmts"),
        *("peak_conns", "pool", "peak_threads", "loop_held", "C_eff", "limit"),
    )

    points: list[ProbePoint] = field(default_factory=list)
    latency_ms: float = 0.0
    unsupported: set[str] = field(default_factory=set)
    """Databases whose statements ran without the simulated wait (no sleep call known)."""
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Points not run, or run anyway with ``force``, by path, each with the reason (`stall`)."""
    app_errors: AppErrors = field(default_factory=AppErrors)
    """The first traceback of each exception the app raised (counts are per point)."""

    def by_path(self) -> dict[str, list[ProbePoint]]:
        return {p.path: [q for q in self.points if q.path == p.path] for p in self.points}

    def rows(self) -> list[dict[str, Any]]:
        """One row per point: the table `python -m labkit probe` prints."""
        rows = []
        for path, points in self.by_path().items():
            for point in points:
                result = point.result
                measured = result.row()  # the load driver's own columns, named as in bench
                rows.append(
                    {
                        "path": path,
                        "C": point.concurrency,
                        "L_ms": self.latency_ms,
                        **{name: measured[name] for name in SHARED_COLUMNS},
                        "failures": point.failures(),
                        "stmts": point.statements.statements / result.requests,
                        "peak_conns": point.conns.peak_checked_out,
                        "pool": point.pool,
                        "peak_threads": result.peak_threads,
                        "threads": result.thread_limit,
                        "loop_held": point.statements.held_loop,
                        "stmts_in_threads": point.statements_in_threads,
                        "loop_db_share": point.loop_db_share,
                        "cpu_share": point.cpu_share,
                        "cpu_ms": result.cpu_ms,
                        "probe_cpu_ms": point.probe_cpu_ms,
                        "app_cpu_ms": point.app_cpu_ms,
                        "C_eff": point.c_eff,
                        "limit": limit_of(point, points),
                    }
                )
        return rows

    def to_frame(self) -> pd.DataFrame:
        """As `Tabular.to_frame`, with the pool a whole number, blank where there is none."""
        frame = super().to_frame()
        if "pool" in frame:
            frame["pool"] = frame["pool"].astype("Int64")
        return frame

    def verdicts(self) -> list[str]:
        """One sentence per path (see `verdict`), and why any of its points was not run."""
        return [
            " ".join([verdict(points), *(f"{why}." for why in self.skipped.get(path, []))])
            for path, points in self.by_path().items()
        ]

    def what_failed(self) -> list[str]:
        """What a server's log and a client would show of the failures: each exception the app
        raised, counted, with its first traceback; the first body of each failing status."""
        raised: Counter[str] = Counter()
        bodies: dict[tuple[str, int], str] = {}
        for point in self.points:
            raised.update(point.app_errors)
            for status, text in point.result.first_body.items():
                bodies.setdefault((point.path, status), text)
        said = [
            f"The app raised {key} ({n} times); the first traceback:\n"
            f"{self.app_errors.tracebacks.get(key, '(none kept)').rstrip()}"
            for key, n in raised.items()
        ]
        said.extend(
            f"{path} answered {status} first with: {text[:300] or '(an empty body)'}"
            for (path, status), text in bodies.items()
        )
        return said


@contextmanager
def _gc_frozen() -> Iterator[None]:
    """Collect once, then leave what exists out of later collections, for the block.

    A full collection over everything importing and starting the app left behind takes tens
    of milliseconds, and would land in whichever point's run happened to trigger it.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """No log record below WARNING, from any logger, for the block: an app that sets its root
    logger to INFO would print a line per request (httpx's "HTTP Request: ..." among them)."""
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(before)


async def probe(
    app: ASGIApp,
    paths: Sequence[str],
    concurrencies: Sequence[int],
    *,
    request: ProbeRequest | None = None,
    latency_ms: float = 0.0,
    requests: int = 200,
    per_client: int = 3,
    warmup: int = 10,
    force: bool = False,
    progress: tqdm[Any] | None = None,
) -> ProbeResult:
    """Load each of `paths` at each of `concurrencies` through `app`, started by its lifespan.

    `request`: the method, headers, body and path parameter values (see `ProbeRequest`; a GET
    with each parameter 1 by default). `latency_ms` is added to every statement on every
    engine, from after startup (a lifespan that seeds a database need not wait for each row) to
    the end. A point sends `requests`, and at least `per_client` per client: with one each, all
    would start together and never reach the steady state the model is about. Each point
    starts with up to `warmup` unmeasured requests, so pools and threads exist before the
    clock starts. The app's errors are answers (a 500 is a failed request), as under a server,
    and kept (`ProbeResult.app_errors`). Points where the path would stall in its pool are
    skipped (`stall`), unless `force`. Logging below WARNING is off while the points run.
    """
    request = request or ProbeRequest()
    concurrencies = sorted(set(concurrencies))
    report = ProbeResult(latency_ms=latency_ms)
    counts = {c: max(requests, per_client * c) for c in concurrencies}
    if progress is not None:
        progress.reset(total=len(paths) * sum(counts.values()))
    try:
        async with served(app) as seen_app:
            client, errors = seen_app.client, seen_app.errors
            report.app_errors = errors
            # The thread watch first: its clock must start before the simulated wait.
            with (
                _quiet_logging(),
                _gc_frozen(),
                watch_statement_threads() as seen,
                latency_everywhere(latency_ms) as slowed,
            ):
                cost = await probe_cost(counts, request)
                for path in paths:
                    path_of = request.path_of(path)
                    first_request = (request.sent.method, path_of(0))  # sent by every point
                    done: list[ProbePoint] = []
                    for c in concurrencies:
                        why = stall(done, c)
                        if why is not None:
                            report.skipped.setdefault(path, []).append(
                                f"C={c} run anyway (--force), though {why}"
                                if force
                                else f"C={c} not run: {why} (--force runs it)"
                            )
                            if not force:
                                if progress is not None:
                                    progress.update(counts[c])
                                continue
                        if progress is not None:
                            progress.set_description(f"{path} C={c}")
                        if warmup:  # unwatched, so statements per request are the run's
                            n = min(c, warmup)
                            await run_load(
                                client, path, requests=n, concurrency=n,
                                path_of=path_of, sent=request.sent,
                            )  # fmt: skip
                        seen.take()  # what ran between points belongs to none
                        errors.take()
                        with watch_engine(None) as conns:
                            result = await run_load(
                                client,
                                path,
                                requests=counts[c],
                                concurrency=c,
                                progress=progress,
                                path_of=path_of,
                                sent=request.sent,
                            )
                        done.append(
                            ProbePoint(
                                path,
                                result,
                                conns,
                                seen.take(),
                                app_errors=errors.take(),
                                probe_cpu_ms=cost.per_request_ms(result),
                                watches_cpu_ms=cost.watches_ms(result),
                                threaded=tuple(threaded_calls(seen_app.routes.get(first_request))),
                            )
                        )
                    report.points.extend(done)
                report.unsupported = set(slowed.unsupported)
    finally:
        if progress is not None:
            progress.close()
    return report
