"""The states of an ORM object, drawn with the calls that moved one object between them.

A notebook walks one object through session calls, reads ``sqlalchemy.inspect(obj)`` after
each, and passes the walk here as ``(call, state)`` pairs. The states sit at fixed places, so
the picture is the same map whatever the walk; only the arrows come from the walk: one per move
it made, numbered in order. A call that left the object where it was (``delete()`` before the
flush) is a loop on its state.

"Expired" is not one of SQLAlchemy's five states: an expired object is persistent, with its
loaded values dropped (``inspect(obj).expired_attributes``). It gets a box of its own because
what happens on the next attribute read (a query) is what a reader has to see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

STATES: dict[str, tuple[float, float, str]] = {
    "transient": (0.0, 2.4, "inspect(obj).transient\nnot in a session, no row"),
    "pending": (3.6, 2.4, "inspect(obj).pending\nin the session, not sent"),
    "persistent": (7.2, 2.4, "inspect(obj).persistent\na row in the transaction"),
    "expired": (11.2, 2.4, "persistent, but every column\nin expired_attributes"),
    "detached": (7.2, 0.0, "inspect(obj).detached\na row, no session"),
    "deleted": (11.2, 0.0, "inspect(obj).deleted\nDELETE flushed, not committed"),
}
"""Each state's place in the figure and what ``inspect()`` reports for it."""

BOX_W, BOX_H = 2.2, 0.95
WALKED, UNSEEN = "#d8e8f6", "#eeeeee"


def _box(ax: Axes, state: str, seen: bool) -> None:
    x, y, note = STATES[state]
    box = FancyBboxPatch(
        (x - BOX_W / 2, y - BOX_H / 2),
        BOX_W,
        BOX_H,
        boxstyle="round,pad=0.04",
        facecolor=WALKED if seen else UNSEEN,
        edgecolor="black" if seen else "grey",
        linestyle="--" if state == "expired" else "-",
    )
    ax.add_patch(box)
    ax.text(x, y + 0.2, state, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(x, y - 0.2, note, ha="center", va="center", fontsize=8, color="dimgrey")


def _edge(centre: tuple[float, float], towards: tuple[float, float]) -> float:
    """How far from `centre`, going along the unit vector `towards`, a box's border is."""
    ux, uy = towards
    reach_x = BOX_W / 2 / abs(ux) if ux else float("inf")
    reach_y = BOX_H / 2 / abs(uy) if uy else float("inf")
    return min(reach_x, reach_y) + 0.06


def _arrow(
    ax: Axes, before: tuple[float, float], after: tuple[float, float], label: str, apart: bool
) -> None:
    """An arrow from box to box, its label on its left-hand side (in the direction of travel).

    The way there and the way back (`apart`) run side by side, each moved to its own left, so
    they never overlap. Ends are cut at the box borders by arithmetic: matplotlib's own clipping
    against the rounded boxes took most of the figure's drawing time.
    """
    (x1, y1), (x2, y2) = before, after
    length = math.hypot(x2 - x1, y2 - y1)
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    nx, ny = -uy, ux  # the left-hand side of the direction of travel
    shift = 0.2 if apart else 0.0
    sx, sy = x1 + nx * shift, y1 + ny * shift
    ex, ey = x2 + nx * shift, y2 + ny * shift
    a, b = _edge((sx, sy), (ux, uy)), _edge((ex, ey), (ux, uy))
    start, end = (sx + ux * a, sy + uy * a), (ex - ux * b, ey - uy * b)
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="tab:blue"))
    mx, my = (start[0] + end[0]) / 2 + nx * 0.1, (start[1] + end[1]) / 2 + ny * 0.1
    if abs(ux) >= abs(uy):  # mostly horizontal: above or below the arrow
        ax.text(mx, my, label, ha="center", va="bottom" if ny > 0 else "top", fontsize=9.5)
    else:  # mostly vertical or slanted: beside it
        ax.text(mx, my, label, ha="left" if nx > 0 else "right", va="center", fontsize=9.5)


def plot_object_states(
    walk: Sequence[tuple[str, str]],
    title: str = "One object's way through a session, as sqlalchemy.inspect() reported it",
) -> Figure:
    """Draw `walk`, a list of ``(call, state after the call)``, over the map of object states.

    The first pair is where the object began (its constructor and ``"transient"``). Each move
    between two states is an arrow labelled ``N · call`` with the step's number; a call that
    left the state as it was is a loop on that state. States the walk never reached are grey.
    """
    unknown = {state for _call, state in walk} - STATES.keys()
    if unknown:
        raise ValueError(f"not a state on the map: {sorted(unknown)}")
    seen = {state for _call, state in walk}
    fig = plt.figure(figsize=(12, 4.8))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.9))
    for state in STATES:
        _box(ax, state, state in seen)

    moves: dict[tuple[str, str], list[str]] = {}
    for number, ((_call, before), (call, after)) in enumerate(pairwise(walk), start=2):
        moves.setdefault((before, after), []).append(f"{number} · {call}")

    first_call, first_state = walk[0]
    x, y, _note = STATES[first_state]
    start = (x - BOX_W / 2 - 1.3, y)
    ax.add_patch(
        FancyArrowPatch(start, (x - BOX_W / 2 - 0.06, y), arrowstyle="-|>", mutation_scale=14)
    )
    ax.plot(*start, "o", color="black", markersize=5)
    ax.text(start[0], y + 0.18, f"1 · {first_call}", ha="left", va="bottom", fontsize=9.5)

    for (before, after), labels in moves.items():
        text = "\n".join(labels)
        x1, y1, _ = STATES[before]
        if before == after:  # a call that changed nothing the states tell apart: a loop on top
            top = y1 + BOX_H / 2 + 0.06
            ax.add_patch(
                FancyArrowPatch(
                    (x1 - 0.45, top),
                    (x1 + 0.45, top),
                    connectionstyle="arc3,rad=-1.1",
                    arrowstyle="-|>",
                    mutation_scale=12,
                    color="tab:blue",
                )
            )
            ax.text(x1, top + 0.55, text, ha="center", va="bottom", fontsize=9.5)
            continue
        x2, y2, _ = STATES[after]
        _arrow(ax, (x1, y1), (x2, y2), text, apart=(after, before) in moves)

    ax.set_xlim(-2.6, 12.6)
    ax.set_ylim(-0.6, 3.7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return fig
