"""Plots of load runs: throughput against the model, response times, event-loop lag, /health.

Each function draws one figure with matplotlib and returns it (a notebook shows it as PNG; the
CLI saves it). Every setup has one colour, marker and line style in every plot (labkit.bench.setups:
colour-blind-safe, and told apart without colour too); the model's bound is a wide pale band in
the setup's colour, behind the measured line. Every figure has one title; where it has several
panels, each panel is named by its legend, so the title is the only heading a reader sees. Log
axes say so in their label, and are labelled in plain numbers (1, 5, 15, 50; 0.1, 1, 10 ms), not
powers of ten. A probe's figure (`plot_probe`) is the one exception: its panels are paths of
someone's app, not setups, so each is headed by its path under the figure's title, and one
legend below them serves them all.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from labkit.bench.grid import GridResult
from labkit.bench.results import LoadResult, by_setup
from labkit.bench.setups import setup_named
from labkit.palette import BLUE, BLUISH_GREEN, GREY, REDDISH_PURPLE, SKY_BLUE
from labkit.probe.points import diagnose, limit_of
from labkit.probe.sweep import ProbeResult

OTHER_COLOURS = {"health": GREY}
"""Paths that are not a setup: ``/health`` grey, any other reddish purple."""

WORKER_COLOURS = (SKY_BLUE, BLUE, BLUISH_GREEN, REDDISH_PURPLE)
WORKER_HATCHES = ("", "//", "..", "xx")
"""Bars for 1, 2, 4... workers: Okabe-Ito colours, and a hatch each so they differ in grey."""

BOUND_WIDTH = 7.0
BOUND_ALPHA = 0.25
"""The model's bound: a wide pale band, so that the measured line on it stays readable."""


def style(setup: str) -> dict[str, Any]:
    """A setup's colour, marker and line style (labkit.bench.setups), as matplotlib's keyword
    arguments; any other path (``/health``) a circle on a solid line, in its `OTHER_COLOURS`."""
    try:
        known = setup_named(setup)
    except ValueError:
        return {"color": OTHER_COLOURS.get(setup, REDDISH_PURPLE), "marker": "o", "linestyle": "-"}
    return {"color": known.colour, "marker": known.marker, "linestyle": known.line}


def colour(setup: str) -> str:
    """A setup's colour, as `style` gives it."""
    return str(style(setup)["color"])


def label(result: LoadResult) -> str:
    return f"{result.setup} (C={result.concurrency}, L={result.latency_ms:g} ms)"


def _plain_numbers(axis: Axis, subs: Sequence[float] = (1.0,)) -> None:
    """Label a log axis in plain numbers (0.1, 1, 10, not 10^-1, 10^0, 10^1), at each decade
    times `subs`: (1, 2, 5) for an axis that spans a decade or two. Minor ticks go unlabelled
    (matplotlib would label some, in its own notation, on a short axis)."""
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _concurrency_axis(ax: Axes, concurrencies: Iterable[int]) -> None:
    """A log axis for C, with a plain tick at each C that was measured and none elsewhere.

    Log, because C runs from 1 to 50 or more and the model's knee sits at small C; ticks at the
    measured values, because those are the only places a reader needs to find.
    """
    ticks = sorted(set(concurrencies))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(c) for c in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def _title(fig: Figure, axes: Sequence[Axes], title: str) -> None:
    """The figure's one title: over its only panel (unless a heading of its own names that
    panel, as a probe's path does), or over the whole row of panels."""
    if len(axes) == 1 and not axes[0].get_title():
        axes[0].set_title(title)
    else:
        fig.suptitle(title)


def _ecdf(ax: Axes, seconds: array[float], *, setup: str, label: str) -> None:
    """The steps in the setup's colour and line style, with its marker at every tenth of the
    requests (a marker on each of hundreds of steps would hide them)."""
    values = np.sort(np.frombuffer(seconds, dtype="d")) * 1000 if len(seconds) else np.array([])
    shares = np.arange(1, len(values) + 1) / max(len(values), 1)
    every = max(len(values) // 10, 1)
    ax.step(
        values, shares, where="post", label=label, linewidth=1.6, markevery=every, **style(setup)
    )


def plot_throughput(grid: GridResult, title: str | None = None) -> Figure:
    """Measured requests per second against C, one panel per latency, the model's bound dashed.

    Each panel's legend names its latency; `title` (by default what the figure shows) is the
    figure's only title.
    """
    latencies = sorted({r.latency_ms for r in grid})
    fig, axes = plt.subplots(
        1, len(latencies), figsize=(5.5 * len(latencies), 4), squeeze=False, sharex=True,
        layout="constrained",
    )  # fmt: skip
    for ax, latency in zip(axes[0], latencies, strict=True):
        results = [r for r in grid if r.latency_ms == latency]
        measured: list[Line2D] = []
        bounds: list[Line2D] = []
        for setup, points in by_setup(results).items():
            points = sorted(points, key=lambda r: r.concurrency)
            cs = [r.concurrency for r in points]
            rps = [r.throughput for r in points]
            measured += ax.plot(cs, rps, linewidth=1.8, label=setup, zorder=3, **style(setup))
            if grid.model is not None and setup in grid.model.cpu_s:
                dense = np.unique(np.geomspace(1, max(cs), 200).round().astype(int))
                bound = [grid.model.throughput(setup, int(c), latency / 1000) for c in dense]
                bounds += ax.plot(
                    dense, bound, color=colour(setup), linewidth=BOUND_WIDTH, alpha=BOUND_ALPHA,
                    solid_capstyle="butt", label=f"{setup}: model bound", zorder=2,
                )  # fmt: skip
        _concurrency_axis(ax, (r.concurrency for r in results))
        ax.set_xlabel("concurrent clients C (log scale)")
        ax.set_ylabel("successful requests per second")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        # Measured lines in the first column, their bounds beside them in the second.
        handles = measured + bounds
        ax.legend(
            handles, [h.get_label() for h in handles], loc="best", fontsize="small",
            ncols=2 if bounds else 1, title=f"L = {latency:g} ms",
        )  # fmt: skip
    _title(
        fig,
        list(axes[0]),
        title or "Throughput against concurrency",
    )
    return fig


def _ecdf_figure(
    results: Sequence[LoadResult],
    seconds_of: Callable[[LoadResult], array[float] | None],
    title: str,
    xlabel: str,
    ylabel: str,
) -> Figure:
    """One ECDF per result (the share of requests answered within x ms), on a log scale."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for result in results:
        seconds = seconds_of(result)
        if seconds is not None:
            _ecdf(ax, seconds, setup=result.setup, label=label(result))
    ax.set_xscale("log")
    _plain_numbers(ax.xaxis, subs=(1.0, 2.0, 5.0))  # response times span a decade or three
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def plot_latency(results: Sequence[LoadResult], title: str = "Response times") -> Figure:
    """The distribution of response times (an ECDF: the share answered within x ms)."""
    return _ecdf_figure(
        results,
        lambda r: r.response_times_s,
        title,
        "response time (ms, log scale)",
        "share of requests answered within",
    )


LAG_FLOOR_MS = 0.01
"""Lags are drawn on a log scale: a wake-up on time (0 ms late) is drawn at this floor."""


def _wakeups(result: LoadResult) -> str:
    """How often the lag probe got to run: "24 wake-ups in 2.4 s (10 per s)"."""
    count = len(result.lag.lags_s)
    rate = count / result.elapsed_s if result.elapsed_s > 0 else float("nan")
    return f"{count} wake-ups in {result.elapsed_s:.1f} s ({rate:.0f} per s)"


def plot_lag(results: Sequence[LoadResult], title: str = "Event-loop lag during the run") -> Figure:
    """How late the 1 ms probe woke, over each run: the delay every other task suffered.

    One panel per run, side by side, on one lag axis and one time axis. Runs of the same requests
    last as long as their setup makes them (the blocking setup's several times as long): on the
    shared time axis the short run ends early, which is half of what the figure says. Its
    hundreds of wake-ups stand densely; how densely is the probe's rate, which the legend also
    gives in numbers.
    """
    fig, axes = plt.subplots(
        1, len(results), figsize=(4.2 * len(results) + 1, 3.8), sharex=True, sharey=True,
        squeeze=False, layout="constrained",
    )  # fmt: skip
    longest = 0.0
    for ax, result in zip(axes[0], results, strict=True):
        lags = np.maximum(np.frombuffer(result.lag.lags_s, dtype="d") * 1000, LAG_FLOOR_MS)
        times = np.frombuffer(result.lag.times_s, dtype="d")
        ax.vlines(times, LAG_FLOOR_MS, lags, color=colour(result.setup), linewidth=0.6, alpha=0.6)
        ax.plot(
            times, lags, style(result.setup)["marker"], markersize=2.5,
            color=colour(result.setup), label=f"{label(result)}\n{_wakeups(result)}",
        )  # fmt: skip
        longest = max(longest, result.elapsed_s, times[-1] if len(times) else 0.0)
        ax.set_yscale("log")
        _plain_numbers(ax.yaxis)
        ax.set_xlabel("time into the run (s)")
        ax.grid(True, alpha=0.3)
        # The panel's name, above it: a legend, so that the figure keeps one title.
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), markerscale=3, frameon=False)
    axes[0][0].set_xlim(0, longest)  # shared: every panel
    axes[0][0].set_ylabel("lag: how late the probe woke (ms, log scale)")
    fig.suptitle(title)  # over the legends that name the panels, however many there are
    return fig


def plot_health(results: Sequence[LoadResult], title: str = "/health while loaded") -> Figure:
    """How long ``/health`` (no database) took while each run loaded the app."""
    return _ecdf_figure(
        results,
        lambda r: r.health_s,
        title,
        "/health response time, from when it was due (ms, log scale)",
        "share of checks answered within",
    )


def plot_workers(
    rows: Sequence[dict[str, Any]], title: str = "Throughput against workers"
) -> Figure:
    """Measured requests per second (bars) and the model's bound (a dash on each bar), one
    group per simulated latency, one bar per number of workers (`WorkersResult.rows`)."""
    latencies = sorted({row["L_ms"] for row in rows})
    workers = sorted({row["workers"] for row in rows})
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    width = 0.8 / len(workers)
    for i, count in enumerate(workers):
        mine = {row["L_ms"]: row for row in rows if row["workers"] == count}
        xs = [j + (i - (len(workers) - 1) / 2) * width for j in range(len(latencies))]
        measured = [mine[latency]["rps"] for latency in latencies]
        bounds = [mine[latency]["model_rps"] for latency in latencies]
        ax.bar(
            xs, measured, width * 0.9, label=f"{count} worker{'s' * (count > 1)}",
            color=WORKER_COLOURS[i % len(WORKER_COLOURS)], edgecolor="black", linewidth=0.5,
            hatch=WORKER_HATCHES[i % len(WORKER_HATCHES)],
        )  # fmt: skip
        ends = ([x - width * 0.45 for x in xs], [x + width * 0.45 for x in xs])
        model_label = "model's bound" if i == 0 else ""  # once in the legend
        ax.hlines(bounds, *ends, colors="black", linestyles="dashed", label=model_label)
    ax.set_xticks(range(len(latencies)), [f"L = {latency:g} ms" for latency in latencies])
    ax.set_xlabel("simulated database latency per statement")
    ax.set_ylabel("requests per second")
    ax.legend(frameon=False)
    _title(fig, [ax], title)
    return fig


PROBE_COLUMNS = 3
"""A probe's panels per row at most: wider, and each panel's C axis grows too narrow to read."""


def plot_probe(report: ProbeResult, title: str | None = None) -> Figure:
    """Measured requests per second against C, one panel per probed path, the model's bound a
    wide pale band behind it, and at each point the limit the probe blames there.

    The panels share no axis: paths of one app can differ tenfold in throughput, and a shared
    scale would flatten the slow one. The limit is written at each point, not only the last,
    because where it changes (clients, then the pool) is the knee the model predicts. Up to
    `PROBE_COLUMNS` panels a row, rows as even as they can be (4 paths: 2 and 2, not 3 and 1).
    Each panel's title is its path; `title` (by default what the figure shows) is the figure's.
    """
    paths = report.by_path()
    rows = max(math.ceil(len(paths) / PROBE_COLUMNS), 1)
    columns = max(math.ceil(len(paths) / rows), 1)
    fig, grid = plt.subplots(
        rows, columns, figsize=(5 * columns, 3.8 * rows + 0.6), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    axes = list(grid.flat)
    for unused in axes[len(paths) :]:
        unused.remove()  # the last row's empty places: one Axes per path
    handles: dict[str, Line2D] = {}
    for ax, (path, points) in zip(axes, paths.items(), strict=False):
        cs = [point.concurrency for point in points]
        rps = [point.result.throughput for point in points]
        (measured,) = ax.plot(
            cs, rps, color=BLUE, marker="o", linewidth=1.8, label="measured", zorder=3
        )
        handles.setdefault("measured", measured)
        bounds = [(c, diagnose(point, points).bound) for c, point in zip(cs, points, strict=True)]
        known = [(c, bound) for c, bound in bounds if math.isfinite(bound)]
        if known:
            (band,) = ax.plot(
                *zip(*known, strict=True), color=BLUE, linewidth=BOUND_WIDTH, alpha=BOUND_ALPHA,
                solid_capstyle="butt", label="model's bound", zorder=2,
            )  # fmt: skip
            handles.setdefault("model's bound", band)
        for point, c, y in zip(points, cs, rps, strict=True):
            ax.annotate(
                limit_of(point, points), (c, y if math.isfinite(y) else 0), xytext=(0, 7),
                textcoords="offset points", ha="center", fontsize="small", zorder=4,
            )  # fmt: skip
        _concurrency_axis(ax, cs)
        highest = max((y for y in [*rps, *(b for _, b in known)] if math.isfinite(y)), default=0)
        ax.set_ylim(0, highest * 1.2 or 1)  # room above the top point for its limit's name
        ax.set_title(path)
        ax.set_xlabel("concurrent clients C (log scale)")
        ax.set_ylabel("throughput (requests/s)")
        ax.grid(True, alpha=0.3)
    if handles:  # one key for every panel, below them all
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2)
    _title(
        fig,
        axes[: len(paths)],
        title or "Throughput against clients, with the model's bound, per path",
    )
    return fig
