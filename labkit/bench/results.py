"""What one load run measured: `LoadResult`, and how several runs of one point add up.

Data only: `to_frame()` gives any result's rows as a pandas DataFrame, labkit.display.plots
draws them; labkit.bench.load makes them.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from labkit.bench.model import ANYIO_THREADS
from labkit.instruments.watch import EngineCounts, LagTrace

if TYPE_CHECKING:
    import pandas as pd


def ms_percentile(values: array[float], q: float) -> float:
    """The q-th percentile in milliseconds (linear interpolation), NaN when nothing was measured."""
    if not len(values):
        return float("nan")
    return float(np.percentile(np.frombuffer(values, dtype="d"), q)) * 1000


class Tabular:
    """A result that gives its measurements as rows (a dict per row, every row the same keys).

    Each result type declares its columns once: every one in `rows`, the order and the names
    of a CSV file's; and in `SHOWN` the few a table in a terminal shows, in order, of those its
    rows have (a run without ``/health`` polling has no ``health_*`` columns). Empty: all.
    """

    SHOWN: ClassVar[tuple[str, ...]] = ()

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame: a table in a notebook, text in a terminal, CSV with `to_csv`.

        pandas is imported here, not with the module: a process that only serves or measures
        never needs it.
        """
        import pandas as pd

        return pd.DataFrame(self.rows())


def succeeded(status: int) -> bool:
    """A 2xx or 3xx answer: the request did what was asked (a redirect is an answer too). Any
    other status is a failure, counted in `Answers.failed` and said in the run's reasons."""
    return 200 <= status < 400


class Answers:
    """What a load run's answers add up to, for any run that counts `statuses` (and `errors`
    raised instead of an answer), times `response_times_s` and lasts `elapsed_s`.

    Throughput counts successful (2xx and 3xx) responses only: a fast stream of 503s is not
    capacity.
    """

    statuses: Counter[int]
    errors: Counter[str]
    response_times_s: array[float]
    elapsed_s: float

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if succeeded(status))

    @property
    def failed(self) -> int:
        """Requests that did not succeed: 4xx and 5xx answers, and exceptions."""
        return sum(self.statuses.values()) - self.ok + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Successful requests per second of the run's wall time."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def percentile_ms(self, q: float) -> float:
        return ms_percentile(self.response_times_s, q)

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)


@dataclass
class LoadResult(Answers, Tabular):
    """One load run: what each request took, what came back, and what the probes saw.

    Throughput counts successful (2xx and 3xx) responses only: a fast stream of 503s is not
    capacity.
    Latencies are client-side (from sending to the full answer) for every response, whatever
    its status; `server_total_s` and `server_db_s` come from each response's ``Server-Timing``.
    """

    SHOWN = (
        *("setup", "C", "L_ms", "ok", "failed", "rps", "p50_ms", "p99_ms", "lag_p99_ms"),
        *("health_p99_ms", "peak_conns", "new_conns", "peak_threads"),
    )
    FROM_OUTSIDE: ClassVar[tuple[str, ...]] = (
        "setup",
        "C",
        "ok",
        "failed",
        "rps",
        "p50_ms",
        "p99_ms",
    )
    """What a run over a socket shows (``python -m labkit drive``): the clients' own view. The
    lag, the threads and the CPU are then the driver's process's, not the server's."""

    setup: str
    concurrency: int
    requests: int
    latency_ms: float
    elapsed_s: float
    cpu_s: float
    response_times_s: array[float]
    server_total_s: array[float]
    server_db_s: array[float]
    statuses: Counter[int]
    errors: Counter[str]
    reasons: Counter[str]
    lag: LagTrace
    health_s: array[float] | None = None
    loop_busy_s: float | None = None
    """How long the event loop's thread ran or waited for a core (`thread_schedule`); None
    where the system does not say."""
    engine: EngineCounts | None = None
    peak_threads: int = 0
    thread_limit: float = ANYIO_THREADS
    pool: int | None = None
    first_body: dict[int, str] = field(default_factory=dict)
    """The first body of each failing status (see `succeeded`): what the app said when it
    refused. (A `SocketLoad` keeps every status's, the successful ones too.)"""

    @property
    def cpu_ms(self) -> float:
        """CPU time of the whole process (all threads) per answered request, in milliseconds."""
        answered = sum(self.statuses.values())
        return self.cpu_s / answered * 1000 if answered else float("nan")

    @property
    def loop_idle_share(self) -> float:
        """The share of the run the event loop had nothing to do: neither running nor waiting
        for a core. Near 0 when the CPU is the limit, however much of it other programs take.
        Where the system does not say (`loop_busy_s` is None): 1 minus the process's CPU share,
        which counts as idle the time other programs held the cores too."""
        busy = self.cpu_s if self.loop_busy_s is None else self.loop_busy_s
        return max(0.0, 1 - busy / self.elapsed_s) if self.elapsed_s else float("nan")

    @property
    def p95_ms(self) -> float:
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def mean_ms(self) -> float:
        return (
            float(np.mean(self.response_times_s)) * 1000
            if len(self.response_times_s)
            else float("nan")
        )

    @property
    def lag_p50_ms(self) -> float:
        return ms_percentile(self.lag.lags_s, 50)

    @property
    def lag_p99_ms(self) -> float:
        return ms_percentile(self.lag.lags_s, 99)

    @property
    def lag_max_ms(self) -> float:
        return max(self.lag.lags_s, default=0.0) * 1000

    @property
    def health_p50_ms(self) -> float:
        return ms_percentile(self.health_s or array("d"), 50)

    @property
    def health_p99_ms(self) -> float:
        return ms_percentile(self.health_s or array("d"), 99)

    @property
    def db_share(self) -> float:
        """The share of the clients' waiting spent inside the database (Server-Timing ``db``)."""
        waited = sum(self.response_times_s)
        return sum(self.server_db_s) / waited if waited else float("nan")

    def row(self) -> dict[str, Any]:
        """The run as one table/CSV row."""
        row: dict[str, Any] = {
            "setup": self.setup,
            "C": self.concurrency,
            "L_ms": self.latency_ms,
            "ok": self.ok,
            "failed": self.failed,
            "rps": self.throughput,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "lag_p50_ms": self.lag_p50_ms,
            "lag_p99_ms": self.lag_p99_ms,
            "lag_max_ms": self.lag_max_ms,
        }
        if self.health_s is not None:
            row["health_p50_ms"] = self.health_p50_ms
            row["health_p99_ms"] = self.health_p99_ms
        row["db_share"] = self.db_share
        if self.engine is not None:
            row |= {
                "statements": self.engine.statements,
                "peak_conns": self.engine.peak_checked_out,
                "new_conns": self.engine.opened,
                "hold_ms": self.engine.mean_hold_s * 1000,
            }
        row |= {
            "peak_threads": self.peak_threads,
            "cpu_ms": self.cpu_ms,
            "pool": self.pool if self.pool is not None else float("nan"),
            "threads": self.thread_limit,
        }
        return row

    def rows(self) -> list[dict[str, Any]]:
        """The run as a list of one row, as `GridResult.rows` gives many."""
        return [self.row()]


def merge(runs: Sequence[LoadResult]) -> LoadResult:
    """One result from several runs of the same point: requests, time and waits add up.

    Throughput is then total successes over total time, and percentiles are over all requests.
    The lag traces are put end to end, each run's clock starting where the last one stopped.
    """
    first = runs[0]
    if len(runs) == 1:
        return first
    lag = LagTrace(first.lag.interval_s)
    health: array[float] | None = None if first.health_s is None else array("d")
    latencies, server_total, server_db = array("d"), array("d"), array("d")
    offset = 0.0
    for run in runs:
        latencies.extend(run.response_times_s)
        server_total.extend(run.server_total_s)
        server_db.extend(run.server_db_s)
        lag.times_s.extend(t + offset for t in run.lag.times_s)
        lag.lags_s.extend(run.lag.lags_s)
        offset += max(run.elapsed_s, run.lag.times_s[-1] if run.lag.times_s else 0.0)
        if health is not None and run.health_s is not None:
            health.extend(run.health_s)
    engine = None
    if first.engine is not None:
        counts = [run.engine for run in runs if run.engine is not None]
        engine = EngineCounts(
            statements=sum(c.statements for c in counts),
            peak_checked_out=max(c.peak_checked_out for c in counts),
            opened=sum(c.opened for c in counts),
            closed=sum(c.closed for c in counts),
            checkouts=sum(c.checkouts for c in counts),
            held_s=sum(c.held_s for c in counts),
        )
    return replace(
        first,
        requests=sum(run.requests for run in runs),
        elapsed_s=sum(run.elapsed_s for run in runs),
        cpu_s=sum(run.cpu_s for run in runs),
        loop_busy_s=(
            None
            if any(run.loop_busy_s is None for run in runs)
            else sum(run.loop_busy_s or 0.0 for run in runs)
        ),
        response_times_s=latencies,
        server_total_s=server_total,
        server_db_s=server_db,
        statuses=sum((run.statuses for run in runs), Counter()),
        errors=sum((run.errors for run in runs), Counter()),
        reasons=sum((run.reasons for run in runs), Counter()),
        lag=lag,
        health_s=health,
        engine=engine,
        peak_threads=max(run.peak_threads for run in runs),
    )


def by_setup(results: Iterable[LoadResult]) -> Mapping[str, list[LoadResult]]:
    """Results grouped by setup, in the order they first appear."""
    groups: dict[str, list[LoadResult]] = {}
    for result in results:
        groups.setdefault(result.setup, []).append(result)
    return groups
