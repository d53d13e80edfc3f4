"""A request's steps on a time line: one row per way of serving it, one marker per step.

Each row is one `RequestSteps` (labkit.lessons.lifecycle.request_steps): the median time of every
step over its runs, in ms since the request reached the app. A bar spans the time a pooled
connection was checked out, and a black tick marks when the body was sent, so what happens on
either side of the response is seen at a glance. Rows served the same way (in process, over a
socket) share a panel; every step has one marker and colour in every row, named once in the
legend, in the order a request takes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from labkit.lessons.lifecycle.request_steps import (
    BODY_SENT,
    CHECKED_IN,
    CHECKED_OUT,
    STEPS,
    RequestSteps,
)

CHECKED_OUT_COLOUR = "#f6d7a7"
MARKED = tuple(step for step in STEPS if step != BODY_SENT)
"""The steps drawn as markers; "body sent" is a black tick across the row instead."""
MARKERS = dict(zip(MARKED, "o>sD<^vhpX*", strict=True))
COLOURS = dict(zip(MARKED, [*(f"C{i}" for i in range(10)), "black"], strict=True))
STAIR = 0.06
"""How far below the previous one each step's marker sits, so that steps a few microseconds
apart stay apart on the page: the row reads as a staircase, first step at the top."""


def _row(ax: Axes, y: float, median: dict[str, float]) -> None:
    top = y + STAIR * (len(MARKED) - 1) / 2
    ax.hlines(y, 0, max(median.values()), color="lightgrey", linewidth=1, zorder=1)
    if CHECKED_OUT in median and CHECKED_IN in median:
        out, back = median[CHECKED_OUT], median[CHECKED_IN]
        ax.barh(y, back - out, left=out, height=0.8, color=CHECKED_OUT_COLOUR, zorder=2)
    if BODY_SENT in median:
        ax.vlines(median[BODY_SENT], y - 0.42, y + 0.42, color="black", linewidth=2.5, zorder=3)
    for index, step in enumerate(MARKED):
        if step in median:
            ax.plot(
                median[step],
                top - STAIR * index,
                MARKERS[step],
                color=COLOURS[step],
                markersize=6,
                linestyle="none",
                zorder=4,
            )


def plot_request_steps(
    results: Sequence[RequestSteps], title: str = "When each step of a request happens"
) -> Figure:
    """Draw each result as a row of its median step times; one panel per way of serving."""
    served = list(dict.fromkeys(result.served for result in results))
    groups = [[r for r in results if r.served == where] for where in served]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(11, 1.2 + 0.55 * len(results)),
        sharex=True,
        squeeze=False,
        height_ratios=[len(group) for group in groups],
        layout="constrained",
    )
    for ax, where, group in zip(axes[:, 0], served, groups, strict=True):
        for y, result in enumerate(reversed(group)):
            _row(ax, y, result.median())
        ax.set_yticks(range(len(group)), [str(r.case) for r in reversed(group)])
        ax.set_ylim(-0.6, len(group) - 0.4)
        ax.set_ylabel(where)
        ax.grid(True, axis="x", alpha=0.3)
    runs = min(len(result.runs) for result in results)
    axes[-1, 0].set_xlabel(f"ms since the request reached the app (median of {runs} runs)")
    handles: list[Artist] = [
        Line2D([], [], marker=MARKERS[step], color=COLOURS[step], linestyle="none", label=step)
        for step in MARKED
    ]
    body = Line2D(
        [],
        [],
        color="black",
        linestyle="none",
        label=BODY_SENT,
        marker="|",
        markersize=12,
        markeredgewidth=2.5,
    )
    handles.insert(STEPS.index(BODY_SENT), body)
    handles.append(Patch(color=CHECKED_OUT_COLOUR, label="a connection checked out"))
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    fig.suptitle(title)
    return fig
