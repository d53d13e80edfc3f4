"""The plots: one title each, labelled axes, plain ticks at the measured C, one lag panel per run,
setups told apart without colour, legend keys drawn as the lines they name.

Drawn from hand-made results, so they run in the quick loop without a load run.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterator

import matplotlib
import pytest

matplotlib.use("Agg")  # no display: only the figure objects are inspected

import matplotlib.pyplot as plt
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from sqlalchemy import create_engine
from sqlalchemy.pool import Pool, QueuePool

from labkit.bench.grid import GridResult
from labkit.bench.model import ThroughputModel
from labkit.bench.results import LoadResult
from labkit.bench.setups import SETUPS
from labkit.display.plots import (
    plot_health,
    plot_lag,
    plot_latency,
    plot_probe,
    plot_throughput,
    style,
)
from labkit.instruments.statements import StatementThreads
from labkit.instruments.watch import EngineCounts, LagTrace
from labkit.probe.points import ProbePoint, limit_of
from labkit.probe.sweep import ProbeResult


def result(
    setup: str, concurrency: int, latency_ms: float, elapsed_s: float, wakeups: int
) -> LoadResult:
    """A run of `setup` whose probe woke `wakeups` times, evenly, over `elapsed_s`."""
    times = [elapsed_s * (i + 1) / (wakeups + 1) for i in range(wakeups)]
    return LoadResult(
        setup=setup,
        concurrency=concurrency,
        requests=100,
        latency_ms=latency_ms,
        elapsed_s=elapsed_s,
        cpu_s=0.1,
        response_times_s=array("d", [0.05 + i / 1000 for i in range(100)]),
        server_total_s=array("d"),
        server_db_s=array("d"),
        statuses=Counter({200: 100}),
        errors=Counter(),
        reasons=Counter(),
        lag=LagTrace(0.001, array("d", times), array("d", [0.0002 * (i % 7) for i in times])),
        health_s=array("d", [0.001 + i / 1000 for i in range(20)]),
    )


@pytest.fixture
def figures() -> Iterator[list[Figure]]:
    """Figures the test draws, closed after it."""
    drawn: list[Figure] = []
    yield drawn
    for figure in drawn:
        plt.close(figure)


def titles(figure: Figure) -> list[str]:
    """Every heading the figure shows: its suptitle and each panel's title."""
    headings = [ax.get_title() for ax in figure.axes]
    if figure._suptitle is not None:
        headings.append(figure._suptitle.get_text())
    return [heading for heading in headings if heading]


def grid(latencies: list[float]) -> GridResult:
    model = ThroughputModel({"threadpool": 0.002, "async": 0.002})
    return GridResult(
        [
            result(setup, c, latency, 1.0, 100)
            for latency in latencies
            for setup in ("threadpool", "async")
            for c in (1, 5, 15, 50)
        ],
        model,
    )


def test_concurrency_axis_has_plain_ticks_at_the_measured_clients(figures) -> None:
    figures.append(figure := plot_throughput(grid([50])))
    (ax,) = figure.axes
    figure.canvas.draw()
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 5, 15, 50]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["1", "5", "15", "50"]
    assert list(ax.xaxis.get_minor_locator()()) == []  # no 2, 3, 4, 20, 30 ... in between


def test_every_figure_has_one_title_and_labelled_axes(figures) -> None:
    runs = [result("blocking", 15, 50, 2.4, 24), result("async", 15, 50, 0.5, 400)]
    figures += [
        plot_throughput(grid([50])),
        plot_throughput(grid([0, 50]), title="Two latencies"),  # one panel per latency
        plot_throughput(grid([50]), title="PostgreSQL"),
        plot_latency(runs),
        plot_health(runs),
        plot_lag(runs),
        plot_lag(runs[:1]),
    ]
    for figure in figures:
        assert len(titles(figure)) == 1, titles(figure)
        for ax in figure.axes:
            assert ax.get_xlabel()
        assert figure.axes[0].get_ylabel()  # panels side by side share the first one's
    assert titles(figures[2]) == ["PostgreSQL"]


def test_throughput_panels_name_their_latency(figures) -> None:
    figures.append(figure := plot_throughput(grid([0, 50])))
    legends = [ax.get_legend().get_title().get_text() for ax in figure.axes]
    assert legends == ["L = 0 ms", "L = 50 ms"]


def test_lag_runs_of_different_lengths_get_a_panel_each_on_shared_axes(figures) -> None:
    short, long = result("async", 15, 50, 0.5, 400), result("blocking", 15, 50, 2.4, 24)
    figures.append(figure := plot_lag([long, short]))
    left, right = figure.axes
    assert left.get_xlim() == right.get_xlim() == (0, 2.4)  # the short run ends early
    assert left.get_ylim() == right.get_ylim()  # one lag scale: heights compare across panels
    assert left.get_yscale() == "log"
    names = [ax.get_legend().get_texts()[0].get_text() for ax in (left, right)]
    assert names[0].startswith("blocking (C=15, L=50 ms)") and "24 wake-ups in 2.4 s" in names[0]
    assert names[1].startswith("async") and "400 wake-ups in 0.5 s (800 per s)" in names[1]


def test_log_axes_read_in_plain_numbers(figures) -> None:
    figures.append(figure := plot_lag([result("async", 15, 50, 0.5, 400)]))
    figures.append(latency := plot_latency([result("async", 15, 50, 0.5, 400)]))
    for axis in (figure.axes[0].yaxis, latency.axes[0].xaxis):
        figure.canvas.draw()
        latency.canvas.draw()
        labels = [tick.get_text() for tick in axis.get_ticklabels() if tick.get_text()]
        assert labels and not any("10^" in text or "$" in text for text in labels), labels


def test_setups_differ_by_marker_and_line_style_and_never_red_beside_green() -> None:
    drawn = [style(setup) for setup in SETUPS]
    assert len({d["marker"] for d in drawn}) == len(SETUPS)
    assert len({d["linestyle"] for d in drawn}) == len(SETUPS)
    hues = []
    for d in drawn:
        red, green, blue = to_rgb(d["color"])
        greenish = green > red + 0.2 and green > blue
        hues.append("red" if red > 0.6 and green < 0.45 else "green" if greenish else "")
    assert not ("red" in hues and "green" in hues), dict(zip(SETUPS, hues, strict=True))


def test_throughput_legend_keys_are_drawn_as_the_lines_they_name(figures) -> None:
    figures.append(figure := plot_throughput(grid([50])))
    (ax,) = figure.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    keys = ax.get_legend().get_lines()
    names = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "threadpool: model bound" in names and "async" in names
    for name, key in zip(names, keys, strict=True):
        line = lines[name]
        assert key.get_color() == line.get_color()
        assert key.get_linestyle() == line.get_linestyle()
        assert key.get_linewidth() == line.get_linewidth()
        assert key.get_marker() == line.get_marker()
    assert "log scale" in ax.get_xlabel()


def probe_point(
    path: str, c: int, rps: float, *, conns: int = 0, pool: Pool | None = None
) -> ProbePoint:
    """A point of `path` as a 1-second run would measure it (as tests/probe/test_probe.py's)."""
    result = LoadResult(
        setup=path, concurrency=c, requests=int(rps), latency_ms=20.0, elapsed_s=1.0, cpu_s=0.01,
        response_times_s=array("d"), server_total_s=array("d"), server_db_s=array("d"),
        statuses=Counter({200: int(rps)}), errors=Counter(), reasons=Counter(),
        lag=LagTrace(0.001),
    )  # fmt: skip
    seen = StatementThreads(0)
    if pool is not None:
        seen.pools[id(pool)] = pool
    return ProbePoint(path, result, EngineCounts(peak_checked_out=conns), seen)


def test_probe_has_a_panel_per_path_with_its_throughput_and_the_limit_at_each_point(
    figures,
) -> None:
    """One path keeps up with its clients; the other's pool of 5 fills, and it goes flat."""
    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=5, max_overflow=0)
    report = ProbeResult(
        [
            *(probe_point("/fast", c, 40 * c) for c in (1, 5, 20)),
            probe_point("/pooled", 1, 40, conns=1, pool=engine.pool),
            probe_point("/pooled", 5, 190, conns=5, pool=engine.pool),
            probe_point("/pooled", 20, 200, conns=5, pool=engine.pool),
        ]
    )
    figures.append(figure := plot_probe(report))
    paths = report.by_path()
    assert [ax.get_title() for ax in figure.axes] == list(paths)
    for ax, points in zip(figure.axes, paths.values(), strict=True):
        measured = next(line for line in ax.get_lines() if line.get_label() == "measured")
        assert list(measured.get_xdata()) == [p.concurrency for p in points]
        assert list(measured.get_ydata()) == [p.result.throughput for p in points]
        named = {(text.xy[0], text.get_text()) for text in ax.texts if isinstance(text, Annotation)}
        assert named == {(p.concurrency, limit_of(p, points)) for p in points}
        assert ax.get_xscale() == "log" and "clients" in ax.get_xlabel()
        assert "(requests/s)" in ax.get_ylabel()
    pooled = [text.get_text() for text in figure.axes[1].texts]
    assert pooled[-1] == "pool" and "clients" in pooled  # the figure shows where it changes
    assert figure._suptitle is not None and figure._suptitle.get_text()
    keys = [text.get_text() for text in figure.legends[0].get_texts()]
    assert keys == ["measured", "model's bound"]
    engine.dispose()


@pytest.mark.parametrize(("paths", "shape"), [(1, (1, 1)), (4, (2, 2)), (6, (2, 3))])
def test_probe_panels_wrap_three_to_a_row(figures, paths: int, shape: tuple[int, int]) -> None:
    report = ProbeResult([probe_point(f"/p{i}", c, 40 * c) for i in range(paths) for c in (1, 5)])
    figures.append(figure := plot_probe(report, title="My app"))
    assert [ax.get_title() for ax in figure.axes] == [f"/p{i}" for i in range(paths)]
    geometry = {ax.get_subplotspec().get_geometry()[:2] for ax in figure.axes}
    assert geometry == {shape}
    assert figure._suptitle is not None and figure._suptitle.get_text() == "My app"
