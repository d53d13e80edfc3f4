"""A request's steps on a time line: when the response goes out, and when the connection goes back.

Each row is one `RequestSteps` (labkit.lessons.lifecycle.request_steps): the median time of every
step over its runs, in ms since the request reached the app. Rows served the same way (in
process, over a socket) share a panel.

Notebook 08's lesson is the order of three steps, so only they are drawn large, in Okabe-Ito
colours that a colour-blind reader can tell apart, each with a shape of its own:

- the body sent: a vermillion tick across the row;
- the connection back in the pool: a blue diamond, ending a light blue bar that spans the time
  the connection was checked out;
- the client having its answer: a black star.

Every other step is a small grey dot, and the legend names them once as "other steps": four
legend entries, not twelve, so the figure reads without a guide beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from labkit.lessons.lifecycle.request_steps import (
    BODY_SENT,
    CHECKED_IN,
    CHECKED_OUT,
    CLIENT_HAS_IT,
    RequestSteps,
)
from labkit.palette import BLUE, LIGHT_GREY, SKY_BLUE, VERMILLION

EMPHASISED = (BODY_SENT, CHECKED_IN, CLIENT_HAS_IT)
"""The steps drawn large; every other step is a small grey dot."""
LABELS = {
    BODY_SENT: "response body sent",
    CHECKED_IN: "connection back in the pool",
    CLIENT_HAS_IT: "client has the answer",
}


def _row(ax: Axes, y: float, median: dict[str, float]) -> None:
    ax.hlines(y, 0, max(median.values()), color=LIGHT_GREY, linewidth=1, zorder=1)
    if CHECKED_OUT in median and CHECKED_IN in median:
        out, back = median[CHECKED_OUT], median[CHECKED_IN]
        ax.barh(y, back - out, left=out, height=0.5, color=SKY_BLUE, alpha=0.35, zorder=2)
    others = [time for step, time in median.items() if step not in EMPHASISED]
    ax.plot(others, [y] * len(others), "o", color=LIGHT_GREY, markersize=4, zorder=3)
    if BODY_SENT in median:
        ax.vlines(median[BODY_SENT], y - 0.38, y + 0.38, color=VERMILLION, linewidth=3.5, zorder=4)
    if CHECKED_IN in median:
        ax.plot(median[CHECKED_IN], y, "D", color=BLUE, markersize=10, zorder=5)
    if CLIENT_HAS_IT in median:
        ax.plot(median[CLIENT_HAS_IT], y, "*", color="black", markersize=14, zorder=6)


def _legend_handles() -> list[Artist | tuple[Artist, ...]]:
    held = Patch(color=SKY_BLUE, alpha=0.35)
    back = Line2D([], [], marker="D", color=BLUE, markersize=10, linestyle="none")
    sent = Line2D(
        [],
        [],
        marker="|",
        color=VERMILLION,
        markersize=16,
        markeredgewidth=3.5,
        linestyle="none",
    )
    client = Line2D([], [], marker="*", color="black", markersize=14, linestyle="none")
    other = Line2D([], [], marker="o", color=LIGHT_GREY, markersize=4, linestyle="none")
    return [sent, (held, back), client, other]


def plot_request_steps(
    results: Sequence[RequestSteps],
    title: str = "When the connection goes back to the pool, and when the response goes out",
) -> Figure:
    """Draw each result as a row of its median step times; one panel per way of serving."""
    served = list(dict.fromkeys(result.served for result in results))
    groups = [[r for r in results if r.served == where] for where in served]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(10, 1.8 + 0.6 * len(results)),
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
    labels = [
        LABELS[BODY_SENT],
        f"{LABELS[CHECKED_IN]} (bar: checked out)",
        LABELS[CLIENT_HAS_IT],
        "other steps",
    ]
    fig.legend(
        handles=_legend_handles(),
        labels=labels,
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
        loc="outside lower center",
        ncols=4,
        frameon=False,
    )
    fig.suptitle(title)
    return fig
