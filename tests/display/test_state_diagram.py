"""The object-state picture draws the walk it is given: an arrow per move, a loop where the
state did not change, and nothing for a state it does not know."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import FancyArrowPatch

from labkit.display.state_diagram import plot_object_states

WALK = [
    ("User(...)", "transient"),
    ("add()", "pending"),
    ("flush()", "persistent"),
    ("commit()", "expired"),
    ("refresh()", "persistent"),
    ("delete()", "persistent"),
    ("flush()", "deleted"),
]


def texts(figure: plt.Figure) -> set[str]:
    return {text.get_text() for text in figure.axes[0].texts}


def test_each_move_is_a_numbered_arrow_and_a_call_that_changed_nothing_a_loop() -> None:
    figure = plot_object_states(WALK, title="a walk")
    arrows = [p for p in figure.axes[0].patches if isinstance(p, FancyArrowPatch)]
    # the way in, five moves between states, and delete()'s loop on "persistent"
    assert len(arrows) == 1 + 5 + 1
    assert {"1 · User(...)", "4 · commit()", "5 · refresh()", "6 · delete()"} <= texts(figure)
    assert figure.axes[0].get_title() == "a walk"
    plt.close(figure)


def test_a_repeated_move_is_one_arrow_with_both_labels() -> None:
    walk = [*WALK[:4], ("refresh()", "persistent"), ("commit()", "expired")]
    figure = plot_object_states(walk)
    assert "4 · commit()\n6 · commit()" in texts(figure)
    plt.close(figure)


def test_a_state_not_on_the_map_is_refused() -> None:
    with pytest.raises(ValueError, match="zombie"):
        plot_object_states([("User(...)", "transient"), ("haunt()", "zombie")])
