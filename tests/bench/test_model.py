"""The throughput model: which limit binds, the bound and the knee it gives, and where a setup
may deadlock, for each setup (`ThroughputModel.diagnose`)."""

from __future__ import annotations

import math

import pytest

from labkit.bench.model import ThroughputModel
from labkit.bench.setups import ASYNC, BLOCKING, THREADPOOL, Setup

S = 0.0015  # 1.5 ms of CPU per request: about 667 requests per second on one core
MODEL = ThroughputModel({"blocking": S, "threadpool": S, "async": S})


def test_blocking_setup_serves_one_request_at_a_time_whatever_the_concurrency() -> None:
    for c in (1, 15, 100):
        at = MODEL.diagnose(BLOCKING, c, 0.050)
        assert at.c_eff == MODEL.effective_concurrency("blocking", c) == 1
        assert at.bound == MODEL.throughput("blocking", c, 0.050) == pytest.approx(1 / 0.0515)
    assert MODEL.diagnose(BLOCKING, 100, 0.050).limit == "event loop"
    assert MODEL.diagnose(BLOCKING, 1, 0.050).limit == "event loop"  # not "clients": C_eff is 1


def test_threadpool_is_held_by_the_pool_then_the_threads() -> None:
    assert MODEL.diagnose(THREADPOOL, 10, 0.050).c_eff == 10
    assert MODEL.diagnose(THREADPOOL, 50, 0.050).c_eff == 15  # pool 5 + 10
    assert MODEL.with_limits(pool=100).diagnose(THREADPOOL, 80, 0.050).c_eff == 40
    assert MODEL.with_limits(pool=100, threads=80).diagnose(THREADPOOL, 80, 0.050).c_eff == 80
    assert MODEL.diagnose(THREADPOOL, 50, 0.050).limit == "pool"
    assert MODEL.with_limits(pool=100).diagnose(THREADPOOL, 80, 0.200).limit == "threads"
    assert MODEL.diagnose(THREADPOOL, 5, 0.050).limit == "clients"


def test_threads_and_pool_of_the_same_size_bind_as_the_pool() -> None:
    # 40 threads, 40 connections, 80 clients: the threads are not fewer than the pool
    assert MODEL.with_limits(pool=40).diagnose(THREADPOOL, 80, 0.200).limit == "pool"


def test_async_setup_is_held_by_the_pool_only() -> None:
    assert MODEL.with_limits(pool=100).diagnose(ASYNC, 80, 0.050).c_eff == 80
    assert MODEL.diagnose(ASYNC, 50, 0.050).bound == pytest.approx(15 / 0.0515)
    assert MODEL.with_limits(pool=100, threads=1).diagnose(ASYNC, 80, 0.200).limit == "clients"
    assert MODEL.diagnose(ASYNC, 50, 0.200).limit == "pool"


def test_at_ten_ms_the_cpu_binds_before_the_pool_of_fifteen() -> None:
    # 15 connections could carry 15 / 11.5 ms = 1,300 requests per second; one core, 667.
    at = MODEL.diagnose(THREADPOOL, 50, 0.010)
    assert at.bound == pytest.approx(1 / S)
    assert at.limit == "cpu"
    # where the two bounds are equal, the CPU's is named: C_eff / (L + s) = 1 / s at C_eff = 2
    assert ThroughputModel({"async": 0.5}).diagnose(ASYNC, 2, 0.5).limit == "cpu"
    assert ThroughputModel({"async": 0.5}).diagnose(ASYNC, 1, 0.5).limit == "clients"


def test_littles_law_gives_the_response_time() -> None:
    # 15 requests in progress at 291 per second: each of the 50 clients waits 50 / 291 s.
    assert MODEL.diagnose(ASYNC, 50, 0.050).response_time_s == pytest.approx(50 * 0.0515 / 15)


def test_the_knee_is_the_first_limit_reached() -> None:
    assert MODEL.diagnose(ASYNC, 1, 0.050).knee == 15  # the pool, before the CPU's 35.3
    assert MODEL.diagnose(ASYNC, 1, 0.050).cpu_knee == pytest.approx(0.0515 / S)
    assert MODEL.diagnose(ASYNC, 1, 0.010).knee == pytest.approx(0.0115 / S)  # the CPU's, 7.7
    assert MODEL.diagnose(ASYNC, 1, 0.0).knee == 1
    assert MODEL.diagnose(BLOCKING, 1, 0.050).knee == 1  # one request waits at a time
    assert MODEL.with_limits(pool=100).diagnose(THREADPOOL, 1, 0.200).knee == 40  # the threads
    # the knee does not depend on the clients the point was asked at
    assert {MODEL.diagnose(ASYNC, c, 0.050).knee for c in (1, 15, 100)} == {15}


def test_the_bound_stops_growing_at_the_knee() -> None:
    for setup in (BLOCKING, THREADPOOL, ASYNC):
        knee = math.ceil(MODEL.diagnose(setup, 1, 0.020).knee)
        bounds = [MODEL.diagnose(setup, c, 0.020).bound for c in range(1, 80)]
        assert bounds[knee - 1] == max(bounds), setup.name  # reached at the knee ...
        if knee > 1:
            assert bounds[knee - 2] < bounds[knee - 1], setup.name  # ... and not before


def test_a_faster_measurement_lowers_s_and_a_slower_one_leaves_it() -> None:
    faster = MODEL.with_faster({"blocking": S / 2, "threadpool": 2 * S})
    assert faster.cpu_s == {"blocking": S / 2, "threadpool": S, "async": S}
    assert (faster.pool, faster.threads) == (MODEL.pool, MODEL.threads)


def test_unknown_setup_is_refused() -> None:
    with pytest.raises(ValueError, match="no setup 'health'"):
        MODEL.effective_concurrency("health", 1)


def test_the_sync_setups_may_deadlock_past_their_limits_and_async_never() -> None:
    def risk(model: ThroughputModel, setup: Setup, clients: int) -> bool:
        return model.diagnose(setup, clients, 0.0).may_deadlock

    assert not risk(MODEL, BLOCKING, 15) and risk(MODEL, BLOCKING, 16)
    assert not risk(MODEL, THREADPOOL, 54) and risk(MODEL, THREADPOOL, 55)
    assert not risk(MODEL, ASYNC, 1000)
    smaller = MODEL.with_limits(pool=2, threads=3)
    assert not risk(smaller, BLOCKING, 2) and risk(smaller, BLOCKING, 3)
    assert not risk(smaller, THREADPOOL, 4) and risk(smaller, THREADPOOL, 5)


def test_the_deadlock_risk_needs_no_cpu_time_but_the_bound_does() -> None:
    limits = ThroughputModel(pool=1, threads=2)  # as `python -m labkit bench --no-model` asks
    assert limits.diagnose(BLOCKING, 3, 0.005).may_deadlock
    assert limits.diagnose(THREADPOOL, 3, 0.005).may_deadlock
    with pytest.raises(KeyError):
        _ = limits.diagnose(BLOCKING, 3, 0.005).bound
