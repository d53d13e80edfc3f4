"""The throughput model: which limit binds, and the bound it gives, for each setup."""

from __future__ import annotations

import pytest

from labkit.bench.model import ThroughputModel

S = 0.0015  # 1.5 ms of CPU per request: about 667 requests per second on one core
MODEL = ThroughputModel({"blocking": S, "threadpool": S, "async": S})


def test_blocking_setup_serves_one_request_at_a_time_whatever_the_concurrency() -> None:
    for c in (1, 15, 100):
        assert MODEL.effective_concurrency("blocking", c) == 1
        assert MODEL.throughput("blocking", c, 0.050) == pytest.approx(1 / 0.0515)
    assert MODEL.limit("blocking", 100, 0.050) == "event loop"


def test_threadpool_is_held_by_the_pool_then_the_threads() -> None:
    assert MODEL.effective_concurrency("threadpool", 10) == 10
    assert MODEL.effective_concurrency("threadpool", 50) == 15  # pool 5 + 10
    assert MODEL.with_limits(pool=100).effective_concurrency("threadpool", 80) == 40
    assert MODEL.with_limits(pool=100, threads=80).effective_concurrency("threadpool", 80) == 80
    assert MODEL.limit("threadpool", 50, 0.050) == "pool"
    assert MODEL.with_limits(pool=100).limit("threadpool", 80, 0.200) == "threads"
    assert MODEL.limit("threadpool", 5, 0.050) == "clients"


def test_async_setup_is_held_by_the_pool_only() -> None:
    assert MODEL.with_limits(pool=100).effective_concurrency("async", 80) == 80
    assert MODEL.throughput("async", 50, 0.050) == pytest.approx(15 / 0.0515)


def test_at_ten_ms_the_cpu_binds_before_the_pool_of_fifteen() -> None:
    # 15 connections could carry 15 / 11.5 ms = 1,300 requests per second; one core, 667.
    assert MODEL.throughput("threadpool", 50, 0.010) == pytest.approx(1 / S)
    assert MODEL.limit("threadpool", 50, 0.010) == "cpu"


def test_littles_law_gives_the_response_time() -> None:
    # 15 requests in progress at 291 per second: each of the 50 clients waits 50 / 291 s.
    assert MODEL.response_time("async", 50, 0.050) == pytest.approx(50 * 0.0515 / 15)


def test_the_knee_is_the_first_limit_reached() -> None:
    assert MODEL.knee("async", 0.050) == 15
    assert MODEL.knee("async", 0.0) == 1


def test_unknown_setup_is_refused() -> None:
    with pytest.raises(ValueError, match="no setup 'health'"):
        MODEL.effective_concurrency("health", 1)


def test_the_sync_setups_may_deadlock_past_their_limits_and_async_never() -> None:
    assert not MODEL.may_deadlock("blocking", 15) and MODEL.may_deadlock("blocking", 16)
    assert not MODEL.may_deadlock("threadpool", 54) and MODEL.may_deadlock("threadpool", 55)
    assert not MODEL.may_deadlock("async", 1000)
