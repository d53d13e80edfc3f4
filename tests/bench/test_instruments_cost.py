"""What the lab's instruments cost: the bare shop app against `create_app`'s, at L = 0."""

from __future__ import annotations

import pytest

from labkit.bench.instruments_cost import InstrumentsCost, SetupCost, instruments_cost
from labkit.bench.setups import SETUPS

pytestmark = pytest.mark.anyio


def test_ratio_is_the_median_round() -> None:
    cost = SetupCost("async", bare_rps=(100.0, 200.0, 100.0), instrumented_rps=(90, 100, 95))
    assert cost.ratios == (0.9, 0.5, 0.95)
    assert cost.ratio == 0.9
    measured = InstrumentsCost(concurrency=10, requests=50, rounds=3, setups=(cost,))
    assert measured.ratio("async") == 0.9
    with pytest.raises(KeyError):
        measured.ratio("blocking")


async def test_a_tiny_run_has_every_setup_both_apps_and_every_round() -> None:
    measured = await instruments_cost(requests=6, concurrency=2, rounds=2, slices=2, warmup=2)
    frame = measured.to_frame()
    assert list(frame["setup"]) == list(SETUPS)
    assert list(frame.columns) == [
        "setup", "C", "bare_rps", "instrumented_rps", "ratio", "ratios"
    ]  # fmt: skip
    for cost in measured.setups:
        assert len(cost.bare_rps) == len(cost.instrumented_rps) == 2
        assert all(rps > 0 for rps in cost.bare_rps + cost.instrumented_rps)
        assert 0 < cost.ratio < 10


async def test_the_measurement_says_why_it_failed() -> None:
    with pytest.raises(RuntimeError, match="slices at most requests"):
        await instruments_cost(requests=2, slices=3)
