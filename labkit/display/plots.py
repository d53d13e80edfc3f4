"""Plots of load runs: throughput against the model, response times, event-loop lag, /health.

Each function draws one figure with matplotlib and returns it (a notebook shows it as PNG; the
CLI saves it). Every setup has one colour in every plot; the model's line is dashed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..experiments.grid import Grid
from ..experiments.results import LoadResult, by_setup
from ..experiments.setups import setup_named

OTHER_COLOURS = {"health": "tab:gray"}


def colour(setup: str) -> str:
    """A setup's colour (labkit.experiments.setups); ``/health`` grey, any other path purple."""
    try:
        return setup_named(setup).colour
    except ValueError:
        return OTHER_COLOURS.get(setup, "tab:purple")


def label(result: LoadResult) -> str:
    return f"{result.setup} (C={result.concurrency}, L={result.latency_ms:g} ms)"


def _ecdf(ax: Axes, seconds: Sequence[float], **style: object) -> None:
    values = np.sort(np.frombuffer(seconds, dtype="d")) * 1000 if len(seconds) else np.array([])
    shares = np.arange(1, len(values) + 1) / max(len(values), 1)
    ax.step(values, shares, where="post", **style)  # type: ignore[arg-type]


def plot_throughput(grid: Grid) -> Figure:
    """Measured requests per second against C, one panel per latency, the model's bound dashed."""
    latencies = sorted({r.latency_ms for r in grid})
    fig, axes = plt.subplots(
        1, len(latencies), figsize=(5.5 * len(latencies), 4), squeeze=False, layout="constrained"
    )
    for ax, latency in zip(axes[0], latencies, strict=True):
        results = [r for r in grid if r.latency_ms == latency]
        for setup, points in by_setup(results).items():
            points = sorted(points, key=lambda r: r.concurrency)
            cs = [r.concurrency for r in points]
            ax.plot(cs, [r.throughput for r in points], "o-", color=colour(setup), label=setup)
            if grid.model is not None and setup in grid.model.cpu_s:
                dense = np.unique(np.geomspace(1, max(cs), 200).round().astype(int))
                bound = [grid.model.throughput(setup, int(c), latency / 1000) for c in dense]
                ax.plot(dense, bound, "--", color=colour(setup), alpha=0.7)
        ax.set_xscale("log")
        ax.set_title(f"Throughput against concurrency, L = {latency:g} ms")
        ax.set_xlabel("concurrent clients C")
        ax.set_ylabel("successful requests per second")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    if grid.model is not None:
        handles.append(plt.Line2D([], [], linestyle="--", color="black"))
        names.append("model bound")
    axes[0][-1].legend(handles, names, loc="best")
    return fig


def _ecdf_figure(
    results: Sequence[LoadResult],
    seconds_of: Callable[[LoadResult], Sequence[float] | None],
    title: str,
    xlabel: str,
    ylabel: str,
) -> Figure:
    """One ECDF per result (the share of requests answered within x ms), on a log scale."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for result in results:
        seconds = seconds_of(result)
        if seconds is not None:
            _ecdf(ax, seconds, color=colour(result.setup), label=label(result))
    ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
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


def _draw_lag(ax: Axes, result: LoadResult, **style: object) -> None:
    """Each wake-up as a stem at the time it happened, as tall as it was late."""
    lags = np.maximum(np.frombuffer(result.lag.lags_s, dtype="d") * 1000, LAG_FLOOR_MS)
    times = np.frombuffer(result.lag.times_s, dtype="d")
    ax.vlines(times, LAG_FLOOR_MS, lags, color=colour(result.setup), linewidth=0.6, alpha=0.6)
    ax.plot(times, lags, ".", markersize=3, color=colour(result.setup), **style)  # type: ignore[arg-type]
    ax.set_yscale("log")
    ax.set_xlabel("time into the run (s)")
    ax.grid(True, alpha=0.3)


def plot_lag(results: Sequence[LoadResult], title: str = "Event-loop lag during the run") -> Figure:
    """How late the 1 ms probe woke, over the run: the delay every other task suffered."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for result in results:
        _draw_lag(ax, result, label=label(result))
    ax.set_title(title)
    ax.set_ylabel("lag: how late the probe woke (ms, log scale)")
    ax.legend(loc="upper right", markerscale=3)
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


def plot_result(result: LoadResult) -> Figure:
    """One run: its response-time histogram beside its event-loop lag timeline."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    latencies = np.frombuffer(result.response_times_s, dtype="d") * 1000
    left.hist(latencies, bins=40, color=colour(result.setup))
    left.set_title(f"Response times: {label(result)}")
    left.set_xlabel("response time (ms)")
    left.set_ylabel("requests")
    left.grid(True, alpha=0.3)
    _draw_lag(right, result)
    right.set_title("Event-loop lag (1 ms probe)")
    right.set_ylabel("lag (ms, log scale)")
    return fig
