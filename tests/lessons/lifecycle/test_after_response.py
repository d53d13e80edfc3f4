"""Work that outlives the response: what a background task, a stream or a WebSocket does with the
request's session, and the fixes; and the in-process WebSocket client they are driven with."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy.engine import URL
from support import assert_nothing_held

from labkit.app.client import event_stream, lab_client, lab_websocket
from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed, seed_users
from labkit.infra.uvicorn import uvicorn_in_process
from labkit.instruments.watch import collect_log
from labkit.lessons.lifecycle.after_response import (
    InFlight,
    after_response_app,
    cycle_collector_paused,
    outbox,
    stream_lag,
    until_checked_out,
)

pytestmark = pytest.mark.anyio

POOL = EngineOptions(pool_size=2, max_overflow=1, pool_timeout=0.2)  # 3 connections: quick
OTHER_ROUTE = "/threadpool/users/1"
NAME = {"name": "Renamed"}


@pytest.fixture
def database(db_url: URL) -> Iterator[SyncDatabase]:
    database = SyncDatabase.create(db_url, POOL)
    create_and_seed(database.engine)
    yield database
    database.dispose()


@asynccontextmanager
async def serve_lesson(database: SyncDatabase) -> AsyncIterator[tuple[InFlight, httpx.AsyncClient]]:
    """The app under uvicorn; a client that opens a connection per request, as many users do."""
    in_flight = InFlight()
    app = after_response_app(database, in_flight)
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with (
        uvicorn_in_process(app) as base,
        httpx.AsyncClient(base_url=base, limits=no_reuse) as client,
    ):
        with collect_log("uvicorn.error") as errors, collect_log("labkit.shop.errors"):
            yield in_flight, client
            await in_flight.idle()
        assert not errors, [record.getMessage() for record in errors]


def leaked(database: SyncDatabase) -> int:
    """Connections checked out while every session is closed; zero once collected."""
    assert database.ledger.open == 0
    count = database.engine.pool.checkedout()
    gc.collect()
    assert database.engine.pool.checkedout() == 0
    return count


# Background tasks


async def test_a_task_given_the_request_session_holds_its_connection_after_the_answer(
    database: SyncDatabase,
) -> None:
    async with serve_lesson(database) as (in_flight, client):
        with outbox.held():
            for user_id in (1, 2):
                response = await client.put(f"/request-scope/users/{user_id}/name", json=NAME)
                assert response.status_code == 204
            await outbox.until_waiting(2)
            assert database.engine.pool.checkedout() == 2
        await in_flight.idle()
    assert_nothing_held(database)


async def test_a_task_given_a_user_from_a_function_scoped_session_finds_it_detached(
    database: SyncDatabase,
) -> None:
    in_flight = InFlight()
    async with uvicorn_in_process(after_response_app(database, in_flight)) as base:
        with collect_log("uvicorn.error") as errors:
            async with httpx.AsyncClient(base_url=base) as client:
                response = await client.put("/function-scope/users/1/name", json=NAME)
            await in_flight.idle()
    assert response.status_code == 204
    assert [record.exc_info[1].__class__.__name__ for record in errors if record.exc_info] == [
        "DetachedInstanceError"
    ]
    assert_nothing_held(database)


async def test_a_task_given_a_function_scoped_session_leaks_a_connection_the_ledger_misses(
    database: SyncDatabase,
) -> None:
    sent = len(outbox.sent)
    with cycle_collector_paused():
        async with serve_lesson(database) as (_in_flight, client):
            for user_id in (1, 2):
                response = await client.put(
                    f"/function-scope/session/users/{user_id}/name", json=NAME
                )
                assert response.status_code == 204
        assert database.ledger.opened == database.ledger.closed == 2
        assert len(outbox.sent) == sent + 2  # the tasks did their work
        assert leaked(database) == 2


async def test_a_task_with_its_own_session_waits_for_the_read_the_route_left_open(
    database: SyncDatabase,
) -> None:
    async with serve_lesson(database) as (_in_flight, client):
        with outbox.held():
            for user_id in (1, 2):
                response = await client.post(f"/request-scope/users/{user_id}/reminder")
                assert response.status_code == 202
            await outbox.until_waiting(2)
            assert database.engine.pool.checkedout() == 2  # the requests' sessions, not the tasks'
    assert_nothing_held(database)


async def test_a_task_with_its_own_session_after_a_closed_request_session_holds_nothing(
    database: SyncDatabase,
) -> None:
    requests = [("PUT", "/own-session/users/{}/name"), ("POST", "/own-session/users/{}/reminder")]
    sent = len(outbox.sent)
    with cycle_collector_paused():
        async with serve_lesson(database) as (_in_flight, client):
            with outbox.held():
                for method, path in requests:
                    for user_id in (1, 2, 3):  # six waiting tasks, on a pool of three
                        response = await client.request(method, path.format(user_id), json=NAME)
                        assert response.status_code in (202, 204)
                await outbox.until_waiting(6)
                assert database.engine.pool.checkedout() == 0
                assert (await client.get(OTHER_ROUTE)).status_code == 200
        assert len(outbox.sent) == sent + 6
        assert database.ledger.opened == database.ledger.closed == 6 + 6 + 1
        assert leaked(database) == 0


# Server-Sent Events


async def streams_until_refused(
    database: SyncDatabase, in_flight: InFlight, client: httpx.AsyncClient, path: str, most: int
) -> int:
    """Open streams one at a time (each read once) until the other route answers 503."""
    async with AsyncExitStack() as streams:
        for opened in range(1, most + 1):
            stream = await streams.enter_async_context(event_stream(client, path))
            assert await stream.next_data() == '{"users":1000}'
            status = (await client.get(OTHER_ROUTE)).status_code
            await in_flight.down_to(opened)  # that request is over: only the streams are left
            if status == 503:
                assert database.engine.pool.checkedout() == opened
                return opened
    return 0


async def test_streams_reading_through_the_request_session_drain_the_pool(
    database: SyncDatabase,
) -> None:
    async with serve_lesson(database) as (in_flight, client):
        assert (
            await streams_until_refused(database, in_flight, client, "/request-scope/stats", 5)
            == POOL.pool
        )
    assert_nothing_held(database)


async def test_streams_that_give_the_connection_back_between_events_hold_none(
    database: SyncDatabase,
) -> None:
    with cycle_collector_paused():
        async with serve_lesson(database) as (in_flight, client):
            for path in ("/read-close/stats", "/own-session/stats"):
                refused = await streams_until_refused(
                    database, in_flight, client, path, POOL.pool + 1
                )
                assert refused == 0, path
        assert leaked(database) == 0


async def test_a_function_scoped_stream_reopens_the_closed_session_and_leaks(
    database: SyncDatabase,
) -> None:
    with cycle_collector_paused():
        async with serve_lesson(database) as (_in_flight, client), AsyncExitStack() as streams:
            for _ in range(2):
                stream = await streams.enter_async_context(
                    event_stream(client, "/function-scope/stats")
                )
                await stream.next_data()
            await until_checked_out(database.engine, 2)
            await streams.aclose()
        assert leaked(database) == 2


@pytest.mark.slow
async def test_a_sync_session_in_an_async_stream_holds_the_loop_for_every_read(
    db_url: URL,
) -> None:
    """Each read waits 40 ms: through a sync session the loop stops that long, once per event;
    through an AsyncSession it runs on (a stray stop of a busy machine is not one per read)."""
    latency_ms, events = 40.0, 2
    slow = EngineOptions(latency_ms=latency_ms)
    sync_db, async_db = SyncDatabase.create(db_url, slow), AsyncDatabase.create(db_url, slow)
    create_and_seed(sync_db.engine)
    try:
        app = after_response_app(sync_db, InFlight(), async_db)
        async with uvicorn_in_process(app) as base, httpx.AsyncClient(base_url=base) as client:
            held = {}
            for path in ("/own-session/stats", "/async-session/stats"):
                lags_ms = [lag * 1000 for lag in (await stream_lag(client, path, events)).lags_s]
                held[path] = (max(lags_ms), sum(lag >= latency_ms / 2 for lag in lags_ms))
        longest, long_holds = held["/own-session/stats"]
        assert longest >= 0.8 * latency_ms and long_holds >= events
        assert held["/async-session/stats"][1] < events  # not one stop per read
        assert_nothing_held(sync_db, async_db)
    finally:
        sync_db.dispose()
        await async_db.dispose()


# WebSockets


async def sockets_until_refused(app: FastAPI, client: httpx.AsyncClient, path: str) -> int:
    async with AsyncExitStack() as sockets:
        for opened in range(1, POOL.pool + 2):
            socket = await sockets.enter_async_context(lab_websocket(app, path))
            await socket.send_text(str(opened))
            assert await socket.receive_text() == seed_users()[opened - 1]["name"]
            if (await client.get(OTHER_ROUTE)).status_code == 503:
                return opened
    return 0


async def test_idle_sockets_holding_a_session_each_starve_the_app(
    database: SyncDatabase,
) -> None:
    app = after_response_app(database, InFlight())
    async with lab_client(app) as client:
        with collect_log("labkit.shop.errors"):
            assert await sockets_until_refused(app, client, "/request-scope/ws/users") == 3
            async with AsyncExitStack() as sockets:
                for _ in range(POOL.pool):  # hold the pool again, then one socket more
                    socket = await sockets.enter_async_context(
                        lab_websocket(app, "/request-scope/ws/users")
                    )
                    await socket.send_text("1")
                    await socket.receive_text()
                async with lab_websocket(app, "/request-scope/ws/users") as one_more:
                    await one_more.send_text("1")
                    with pytest.raises(
                        RuntimeError, match=r"websocket\.http\.response\.start"
                    ) as err:
                        await one_more.receive_text()
    assert type(err.value.__context__).__name__ == "TimeoutError"  # the pool's, answered as HTTP
    assert_nothing_held(database)


async def test_a_session_per_message_holds_nothing_between_messages(
    database: SyncDatabase,
) -> None:
    app = after_response_app(database, InFlight())
    async with lab_client(app) as client:
        assert await sockets_until_refused(app, client, "/own-session/ws/users") == 0
    assert_nothing_held(database)


# The in-process WebSocket client


async def refuse(websocket: WebSocket) -> None:
    await websocket.close(code=4001)


def echo_app(closed_by_client: list[bool] | None = None) -> FastAPI:
    """``/echo`` answers each text in capitals (and fails on "fail"); a client's close is noted
    in `closed_by_client`. ``/refuse`` closes at once."""

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                if text == "fail":
                    raise ValueError("asked to fail")
                await websocket.send_text(text.upper())
        except WebSocketDisconnect:
            if closed_by_client is not None:
                closed_by_client.append(True)

    app = FastAPI()
    app.add_api_websocket_route("/echo", echo)
    app.add_api_websocket_route("/refuse", refuse)
    return app


async def test_lab_websocket_sends_receives_and_closes_from_the_client() -> None:
    closed_by_client: list[bool] = []
    async with lab_websocket(echo_app(closed_by_client), "/echo") as socket:
        await socket.send_text("one")
        await socket.send_text("two")
        assert [await socket.receive_text(), await socket.receive_text()] == ["ONE", "TWO"]
    assert closed_by_client == [True]


async def test_lab_websocket_reports_a_refusal_as_a_disconnect() -> None:
    with pytest.raises(WebSocketDisconnect) as refused:
        async with lab_websocket(echo_app(), "/refuse"):
            pass
    assert refused.value.code == 4001


async def test_lab_websocket_raises_the_apps_error_where_the_client_waits() -> None:
    async with lab_websocket(echo_app(), "/echo") as socket:
        await socket.send_text("fail")
        with pytest.raises(ValueError, match="asked to fail"):
            await socket.receive_text()
