"""The request timeline: the three steps notebook 08 is about drawn large, the rest named once."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: only the figure objects are inspected

import matplotlib.pyplot as plt

from labkit.display.timeline import plot_request_steps
from labkit.lessons.lifecycle.request_steps import (
    BODY_SENT,
    CHECKED_IN,
    CHECKED_OUT,
    CLIENT_HAS_IT,
    REQUEST_STARTS,
    ROUTE_RETURNS,
    Case,
    RequestSteps,
)


def steps(served: str, body_sent: float, checked_in: float) -> RequestSteps:
    run = {
        REQUEST_STARTS: 0.0,
        CHECKED_OUT: 1.0,
        ROUTE_RETURNS: 5.0,
        BODY_SENT: body_sent,
        CHECKED_IN: checked_in,
        CLIENT_HAS_IT: max(body_sent, checked_in) + 0.5,
    }
    return RequestSteps(Case("def", "request"), served, (run, run))


def test_the_legend_names_three_steps_and_the_rest_once() -> None:
    figure = plot_request_steps([steps("in process", 7, 12), steps("over a socket", 7, 13)])
    try:
        legend = figure.legends[0] if figure.legends else figure.axes[0].get_legend()
        names = [text.get_text() for text in legend.get_texts()]
        assert len(names) == 4, names
        assert names[-1] == "other steps"
        assert any("body sent" in name for name in names)
        assert any("back in the pool" in name for name in names)
        assert figure.axes[-1].get_xlabel().startswith("ms since")
        assert len(figure.axes) == 2  # one panel per way of serving
    finally:
        plt.close(figure)
