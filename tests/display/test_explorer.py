"""The model explorer: its sliders redraw the three bounds and name what binds, its button
measures the chosen point, and without widgets it is the starting figure and a summary."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy.engine import URL

from labkit.bench.setups import SETUPS
from labkit.display.explorer import ExplorerPoint, ModelExplorer, explore_model, summary

PNG = b"\x89PNG"


def test_moving_a_slider_draws_the_figure_again_and_names_the_new_limit() -> None:
    explorer = explore_model()
    first, limits = explorer.image.value, explorer.limits.value
    assert bytes(first).startswith(PNG) and "pool" in limits  # 30 clients, pool 5 + 10
    explorer.sliders["latency_ms"].value = 50
    explorer.sliders["pool_size"].value = 60
    explorer.sliders["threads"].value = 10
    assert explorer.point == ExplorerPoint(latency_ms=50, pool_size=60, threads=10)
    assert explorer.point.limit("threadpool") == "threads"
    assert explorer.point.limit("async") == "clients"
    assert explorer.image.value != first and explorer.limits.value != limits
    assert "threads" in explorer.limits.value


def test_without_widgets_it_shows_the_starting_figure_and_a_summary() -> None:
    explorer = explore_model(latency_ms=50, clients=15)
    explorer.sliders["clients"].value = 80  # moved: the stored form keeps the start
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.view.model_id
    assert base64.b64decode(bundle["image/png"]).startswith(PNG)
    assert bundle["text/plain"] == summary(ExplorerPoint(latency_ms=50, clients=15))
    lines = bundle["text/plain"].splitlines()
    assert lines[0] == "At C = 15, L = 50 ms, s = 1 ms, pool 5 + 10, 40 threads:"
    assert lines[1].split() == [
        "blocking:",
        "at",
        "most",
        "20",
        "requests/s,",
        "event",
        "loop",
        "binds",
    ]


def test_the_explorer_says_which_inputs_it_knows_and_needs_a_database_to_measure() -> None:
    with pytest.raises(TypeError, match="no model input pool: choose from latency_ms, cpu_ms"):
        explore_model(pool=3)
    explorer = explore_model()
    assert explorer.button.disabled
    with pytest.raises(ValueError, match="none given"):
        explorer.measure()


@pytest.mark.slow
def test_the_button_measures_each_setup_that_cannot_deadlock_there(db_url: URL) -> None:
    start = ExplorerPoint(latency_ms=2, pool_size=2, max_overflow=0, clients=4)
    explorer = ModelExplorer(db_url, start, seconds=0.1)
    before = explorer.image.value
    dots = explorer.measure()  # 4 clients, 2 connections: the blocking setup could deadlock
    assert [dot.setup for dot in dots] == ["threadpool", "async"]
    assert "not blocking: it can deadlock here" in explorer.limits.value
    assert explorer.image.value != before  # the dots are in
    explorer.sliders["clients"].value = 2
    dots = explorer.measure()
    assert [dot.setup for dot in dots] == list(SETUPS)
    for dot in dots:  # s = 1 ms is less than any setup's here: every bound is above its dot
        assert 0 < dot.rps <= 1.2 * explorer.point.bound(dot.setup), dot
    assert not explorer.button.disabled
