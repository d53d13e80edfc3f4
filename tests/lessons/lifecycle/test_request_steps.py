"""When each step of a request happens: the dependency's exit code against the response, for both
dependency scopes and both route kinds, in process and over a socket; the trap's routes on the
same clock; and the picture of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from itertools import pairwise

import httpx
import matplotlib
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL
from support import assert_nothing_held, every_backend

matplotlib.use("Agg")  # no display: only the figure objects are inspected

import matplotlib.pyplot as plt

from labkit.app.client import lab_client
from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.display.timeline import plot_request_steps
from labkit.infra.uvicorn import uvicorn_in_process
from labkit.instruments.events import listening
from labkit.instruments.latency import transaction_end_waits
from labkit.lessons.lifecycle.request_steps import (
    BODY_SENT,
    CASES,
    CHECKED_IN,
    CHECKED_OUT,
    CLIENT_HAS_IT,
    DEPENDENCY_ENTERS,
    DEPENDENCY_EXITS,
    REQUEST_ENDS,
    REQUEST_STARTS,
    RESPONSE_STARTS,
    ROUTE_RETURNS,
    ROUTE_STARTS,
    STEPS,
    VALIDATED,
    Case,
    RequestSteps,
    Timeline,
    measure_steps,
    request_steps_app,
)
from labkit.shop.models import User

pytestmark = pytest.mark.anyio

LATENCY_MS = 5.0
RUNS = 3


@pytest.fixture
async def databases(db_url: URL) -> AsyncIterator[tuple[SyncDatabase, AsyncDatabase]]:
    options = EngineOptions(latency_ms=LATENCY_MS)
    sync, async_ = SyncDatabase.create(db_url, options), AsyncDatabase.create(db_url, options)
    create_and_seed(sync.engine)
    yield sync, async_
    assert_nothing_held(sync, async_)
    sync.dispose()
    await async_.dispose()


async def in_process(databases) -> list[RequestSteps]:
    clock = Timeline()
    async with lab_client(request_steps_app(*databases, clock)) as client:
        return [
            await measure_steps(client, clock, c, served="in process", runs=RUNS) for c in CASES
        ]


async def test_every_step_is_noted_once_and_in_process_the_client_is_last(databases) -> None:
    for result in await in_process(databases):
        for run in result.runs:
            assert sorted(run) == sorted(STEPS)
            assert run[REQUEST_STARTS] == 0 and max(run, key=run.__getitem__) == CLIENT_HAS_IT
        before = [REQUEST_STARTS, DEPENDENCY_ENTERS, ROUTE_STARTS, CHECKED_OUT, ROUTE_RETURNS]
        before += [VALIDATED, RESPONSE_STARTS, BODY_SENT]
        assert all(result.always_before(a, b) for a, b in pairwise(before))


async def test_default_scope_exits_after_the_body_is_sent_function_scope_before_the_response(
    databases,
) -> None:
    for result in await in_process(databases):
        after = result.case.scope == "request"
        assert result.always_before(BODY_SENT, DEPENDENCY_EXITS) is after
        assert result.always_before(CHECKED_IN, RESPONSE_STARTS) is not after
        assert result.always_before(VALIDATED, DEPENDENCY_EXITS)  # either scope
        assert result.always_before(DEPENDENCY_EXITS, CHECKED_IN)
        assert (result.held_after_body_ms() > 0) is after


@pytest.mark.slow
async def test_over_a_socket_the_client_has_its_answer_before_the_connection_is_back(
    databases,
) -> None:
    clock = Timeline()
    app = request_steps_app(*databases, clock)
    async with uvicorn_in_process(app) as base, httpx.AsyncClient(base_url=base) as client:
        results = [
            await measure_steps(client, clock, c, served="over a socket", runs=RUNS) for c in CASES
        ]
    for result in results:
        median = result.median()
        if result.case.scope == "request":
            assert median[CLIENT_HAS_IT] < median[CHECKED_IN] < median[REQUEST_ENDS]
        else:
            assert result.always_before(CHECKED_IN, CLIENT_HAS_IT)


@every_backend
async def test_transaction_end_waits_delay_the_rollback_of_a_close_and_keep_the_loop_free(
    db_url: URL,
) -> None:
    sync, async_ = SyncDatabase.create(db_url), AsyncDatabase.create(db_url)
    create_and_seed(sync.engine)
    waits = transaction_end_waits(sync.engine, 50)
    waits += transaction_end_waits(async_.engine.sync_engine, 50)
    ticks = 0

    async def tick_until(done: asyncio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    try:
        with listening(waits):
            with sync.SessionLocal() as session:
                session.get(User, 1)
                started = time.perf_counter()
            sync_close_s = time.perf_counter() - started
            closed = asyncio.Event()
            ticking = asyncio.create_task(tick_until(closed))
            async with async_.AsyncSessionLocal() as session:
                await session.get(User, 1)
                ticks, started = 0, time.perf_counter()
            async_close_s = time.perf_counter() - started
            closed.set()
            await ticking
    finally:
        sync.dispose()
        await async_.dispose()
    assert sync_close_s >= 0.045 and async_close_s >= 0.045
    assert ticks >= 5  # the event loop ran other tasks while the async close waited
    assert transaction_end_waits(sync.engine, 0) == []


async def test_trap_routes_commit_before_the_response_but_close_the_session_after(
    databases,
) -> None:
    sync, _ = databases
    clock = Timeline()
    new = {"name": "Alan Turing", "email": "alan@example.com"}
    async with lab_client(request_steps_app(*databases, clock), raise_app_exceptions=False) as c:
        unflushed = await c.post("/function-scope/unflushed/users", json=new)
        unflushed_steps = clock.events
        clock.clear()
        flushed = await c.post("/function-scope/flushed/users", json=new)
        flushed_steps = clock.events
    with sync.SessionLocal() as session:
        saved = session.scalar(select(func.count()).where(User.email == new["email"]))
    assert (
        unflushed.status_code == 500
        and unflushed_steps[-1] == "the app raised ResponseValidationError"
    )
    assert "dependency: committed" not in unflushed_steps and CHECKED_OUT not in unflushed_steps
    assert flushed.status_code == 201 and flushed.json()["id"] is not None and saved == 1
    commits = flushed_steps.index("dependency: after yield, commit")
    assert commits < flushed_steps.index(CHECKED_IN) < flushed_steps.index(RESPONSE_STARTS)
    assert flushed_steps.index(BODY_SENT) < flushed_steps.index(DEPENDENCY_EXITS)


def test_step_clock_refuses_one_request_with_a_step_noted_twice() -> None:
    clock = Timeline()
    for step in (REQUEST_STARTS, CHECKED_OUT, CHECKED_IN, CHECKED_OUT):
        clock.note(step)
    with pytest.raises(ValueError, match="connection checked out"):
        clock.since_start(REQUEST_STARTS)


def test_the_timeline_has_one_panel_per_way_of_serving_and_one_row_per_case() -> None:
    run = {step: float(number) for number, step in enumerate(STEPS)}
    results = [
        RequestSteps(case, served, (run, run))
        for served in ("in process", "over a socket")
        for case in (Case("def", "request"), Case("async def", "function"))
    ]
    fig = plot_request_steps(results)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["in process", "over a socket"]
    for ax in axes:
        labels = [tick.get_text() for tick in ax.get_yticklabels()]
        assert labels == ["async def, scope='function'", "def, scope='request'"]  # top row last
    assert fig.get_suptitle().startswith("When the connection goes back to the pool")
    assert axes[-1].get_xlabel() == "ms since the request reached the app (median of 2 runs)"
    names = [text.get_text() for text in fig.legends[0].get_texts()]
    assert len(names) == 4, names  # the three steps the lesson is about, and the rest once
    assert names[-1] == "other steps"
    assert any("body sent" in name for name in names)
    assert any("back in the pool" in name for name in names)
    plt.close(fig)
