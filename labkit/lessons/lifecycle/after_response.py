"""Work that outlives the response: background tasks, streams and WebSockets, and the session.

A route's session comes from ``get_db``, and FastAPI (0.165, the pinned version) closes it when
the dependency's scope ends: with the default scope (``"request"``) after the response has been
sent *and* after the background tasks have run, or after a streamed response has ended, or
after a WebSocket has closed; with ``Depends(get_db, scope="function")`` once the route has
returned and FastAPI has validated its answer, before the response is sent. Until the session
closes, any query it ran keeps a pooled connection checked out. These routes, written as an
app writes them, show what that means for work that goes on after the response:

- background tasks (``/request-scope/...``, ``/function-scope/...``, ``/own-session/...``): a
  task given the request's session holds its connection until the task ends, long after the
  client has its answer; with ``scope="function"`` the same task finds the session closed, and
  a task given a `User` loaded by it fails with `DetachedInstanceError`, while a query through
  the closed session quietly checks out a new connection that nothing gives back (a session
  that was closed, then used again, is counted as closed by the ledger). The fix: the task gets
  the id and opens a session of its own, and the route's session is closed before the response.
- Server-Sent Events (``.../stats``): a stream whose generator reads through the request's
  session holds a connection until the client leaves; fixes: read, close, then send, or a
  short session per event. The generators are ``async def`` and their sessions sync, so each
  read also holds the event loop for as long as the database takes (`stream_lag` measures it);
  ``/async-session/stats`` reads through a short `AsyncSession` per event instead, and frees
  both the connection and the loop between reads.
- WebSockets (``.../ws/users``): a session for the socket's lifetime holds a connection while
  the client is idle; the fix: a session per message.

The routes that open sessions of their own take the factory from `get_session_factory` (or
`get_async_session_factory`), so the lab swaps it with ``app.dependency_overrides`` as it swaps
``get_db``. The emails go to an
`Outbox` (a stand-in for a mail server) that a notebook can hold shut, so that background tasks
are still running, deterministically, while it counts connections. `InFlight` counts the
requests and sockets the app has not finished with (background tasks and dependency exits
included), so a notebook can wait until the app is done before it counts what is left.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

import httpx
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from fastapi.sse import EventSourceResponse
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from labkit.app.client import event_stream
from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.instruments.watch import LagProbe, LagTrace, queue_pool, until
from labkit.shop import threadpool
from labkit.shop.database import AsyncSessionLocal, SessionDep, SessionLocal, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import Name, User, UserId


class Outbox:
    """A stand-in for a mail server: it keeps what was sent, and can be held shut.

    While `held`, every `send` waits at the door (in its worker thread) until the block ends, as
    a slow mail server would keep a background task busy, but for exactly as long as the
    notebook needs; `until_waiting` tells when the tasks have got that far.
    """

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.waiting = 0
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()  # background tasks send from several worker threads

    def send(self, to: str, text: str) -> None:
        with self._lock:
            self.waiting += 1
        self._open.wait()
        with self._lock:
            self.waiting -= 1
            self.sent.append(f"to {to}: {text}")

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep every `send` waiting until the block ends."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    async def until_waiting(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once `count` sends wait at the door (`TimeoutError` if they never do)."""
        await until(lambda: self.waiting >= count, timeout_s=timeout_s)


outbox = Outbox()


def get_session_factory() -> sessionmaker[Session]:
    """The session factory itself, for work that opens sessions of its own."""
    return SessionLocal


SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


def get_async_session_factory() -> async_sessionmaker[AsyncSession]:
    """The async session factory, for a stream that opens a short `AsyncSession` per event."""
    return AsyncSessionLocal


AsyncSessionFactoryDep = Annotated[
    async_sessionmaker[AsyncSession], Depends(get_async_session_factory)
]
ClosedBeforeResponse = Annotated[Session, Depends(get_db, scope="function")]


class NewName(BaseModel):
    name: Name


def found(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    return user


# Background tasks: email the user after the response has gone out.


def email_new_name(db: Session, user_id: int) -> None:
    """Reads the user through the session it was given."""
    user = db.get_one(User, user_id)
    outbox.send(user.email, f"You are now {user.name}.")


def email_new_name_to(user: User) -> None:
    """Reads the user it was given."""
    outbox.send(user.email, f"You are now {user.name}.")


def email_new_name_own_session(session_factory: sessionmaker[Session], user_id: int) -> None:
    """Reads the user in a session of its own, closed before the slow part (sending)."""
    with session_factory() as db:
        user = db.get_one(User, user_id)
        email, name = user.email, user.name
    outbox.send(email, f"You are now {name}.")


def email_reminder_own_session(session_factory: sessionmaker[Session], user_id: int) -> None:
    with session_factory() as db:
        email = db.get_one(User, user_id).email
    outbox.send(email, "You have unread posts.")


tasks_router = APIRouter()


@tasks_router.put("/request-scope/users/{user_id}/name", status_code=status.HTTP_204_NO_CONTENT)
def rename_request_scope(
    user_id: UserId, new: NewName, db: SessionDep, background_tasks: BackgroundTasks
) -> None:
    user = found(db, user_id)
    user.name = new.name
    db.commit()
    background_tasks.add_task(email_new_name, db, user_id)


@tasks_router.put("/function-scope/users/{user_id}/name", status_code=status.HTTP_204_NO_CONTENT)
def rename_function_scope(
    user_id: UserId, new: NewName, db: ClosedBeforeResponse, background_tasks: BackgroundTasks
) -> None:
    user = found(db, user_id)
    user.name = new.name
    db.commit()  # expires `user`: its next read reloads it, through its session
    background_tasks.add_task(email_new_name_to, user)


@tasks_router.put(
    "/function-scope/session/users/{user_id}/name", status_code=status.HTTP_204_NO_CONTENT
)
def rename_function_scope_session(
    user_id: UserId, new: NewName, db: ClosedBeforeResponse, background_tasks: BackgroundTasks
) -> None:
    user = found(db, user_id)
    user.name = new.name
    db.commit()
    background_tasks.add_task(email_new_name, db, user_id)


@tasks_router.post("/request-scope/users/{user_id}/reminder", status_code=status.HTTP_202_ACCEPTED)
def remind_request_scope(
    user_id: UserId,
    db: SessionDep,
    session_factory: SessionFactoryDep,
    background_tasks: BackgroundTasks,
) -> None:
    found(db, user_id)  # a read: the session's transaction, and its connection, stay open
    background_tasks.add_task(email_reminder_own_session, session_factory, user_id)


@tasks_router.put("/own-session/users/{user_id}/name", status_code=status.HTTP_204_NO_CONTENT)
def rename_own_session(
    user_id: UserId,
    new: NewName,
    db: ClosedBeforeResponse,
    session_factory: SessionFactoryDep,
    background_tasks: BackgroundTasks,
) -> None:
    user = found(db, user_id)
    user.name = new.name
    db.commit()
    background_tasks.add_task(email_new_name_own_session, session_factory, user_id)


@tasks_router.post("/own-session/users/{user_id}/reminder", status_code=status.HTTP_202_ACCEPTED)
def remind_own_session(
    user_id: UserId,
    db: ClosedBeforeResponse,
    session_factory: SessionFactoryDep,
    background_tasks: BackgroundTasks,
) -> None:
    found(db, user_id)
    background_tasks.add_task(email_reminder_own_session, session_factory, user_id)


# Server-Sent Events: a live count of users, sent again every REFRESH_S seconds.

REFRESH_S = 0.1


class Stats(BaseModel):
    users: int


def count_users(db: Session) -> Stats:
    return Stats(users=db.execute(select(func.count()).select_from(User)).scalar_one())


async def count_users_async(db: AsyncSession) -> Stats:
    return Stats(users=(await db.execute(select(func.count()).select_from(User))).scalar_one())


streams_router = APIRouter()


@streams_router.get("/request-scope/stats", response_class=EventSourceResponse)
async def stats_request_scope(db: SessionDep) -> AsyncIterator[Stats]:
    while True:
        yield count_users(db)
        await asyncio.sleep(REFRESH_S)


@streams_router.get("/function-scope/stats", response_class=EventSourceResponse)
async def stats_function_scope(db: ClosedBeforeResponse) -> AsyncIterator[Stats]:
    while True:
        yield count_users(db)
        await asyncio.sleep(REFRESH_S)


@streams_router.get("/read-close/stats", response_class=EventSourceResponse)
async def stats_read_close(db: SessionDep) -> AsyncIterator[Stats]:
    while True:
        stats = count_users(db)
        db.close()  # the connection goes back now; the next read checks one out again
        yield stats
        await asyncio.sleep(REFRESH_S)


@streams_router.get("/own-session/stats", response_class=EventSourceResponse)
async def stats_own_session(session_factory: SessionFactoryDep) -> AsyncIterator[Stats]:
    while True:
        with session_factory() as db:
            stats = count_users(db)
        yield stats
        await asyncio.sleep(REFRESH_S)


@streams_router.get("/async-session/stats", response_class=EventSourceResponse)
async def stats_async_session(session_factory: AsyncSessionFactoryDep) -> AsyncIterator[Stats]:
    while True:
        async with session_factory() as db:
            stats = await count_users_async(db)  # the loop serves others while the database works
        yield stats
        await asyncio.sleep(REFRESH_S)


async def stream_lag(client: httpx.AsyncClient, path: str, events: int) -> LagTrace:
    """Open `path`'s event stream, wait for its first event, then record the event loop's lag
    (`LagProbe`) while `events` more arrive; close the stream.

    Each event's read runs on the event loop in an ``async def`` generator: with a sync session
    the loop is blocked until the database answers, and the probe wakes late by that long, once
    per read; with an `AsyncSession` the loop runs other tasks meanwhile, and the probe is on
    time. The client must be on the same loop as the server
    (``labkit.infra.uvicorn.uvicorn_in_process``).
    """
    async with event_stream(client, path) as stream:
        await stream.next_data()  # the stream is up: its opening costs are not counted
        async with LagProbe() as trace:
            for _ in range(events):
                await stream.next_data()
    return trace


# WebSockets: the client sends a user id, the app answers with the user's name.

sockets_router = APIRouter()


@sockets_router.websocket("/request-scope/ws/users")
async def names_request_scope(websocket: WebSocket, db: SessionDep) -> None:
    await websocket.accept()
    try:
        while True:
            user_id = int(await websocket.receive_text())
            user = db.get(User, user_id)
            await websocket.send_text(user.name if user else "no such user")
    except WebSocketDisconnect:
        pass


@sockets_router.websocket("/own-session/ws/users")
async def names_own_session(websocket: WebSocket, session_factory: SessionFactoryDep) -> None:
    await websocket.accept()
    try:
        while True:
            user_id = int(await websocket.receive_text())
            with session_factory() as db:
                user = db.get(User, user_id)
                answer = user.name if user else "no such user"
            await websocket.send_text(answer)
    except WebSocketDisconnect:
        pass


class InFlight:
    """How many requests and sockets the app has not finished with yet.

    An ASGI call ends once the app is done with it: after the response, the background tasks
    and the default-scope dependencies' exit code, or after a stream or a socket has closed. So
    once `idle` returns, whatever is still checked out of the pool stays checked out. (It polls:
    the counts change on the event loop, and a few milliseconds of delay cost nothing here.)
    """

    def __init__(self) -> None:
        self.count = 0

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap `app` (pure ASGI, so streams and sockets are counted too)."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            self.count += 1
            try:
                await app(scope, receive, send)
            finally:
                self.count -= 1

        return counted

    async def down_to(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once at most `count` requests and sockets are left (`TimeoutError` if never)."""
        await until(lambda: self.count <= count, timeout_s=timeout_s)

    async def idle(self, timeout_s: float = 10.0) -> None:
        """Return once the app has finished every request and socket."""
        await self.down_to(0, timeout_s)


async def until_checked_out(engine: Engine, count: int, timeout_s: float = 10.0) -> None:
    """Return once `count` connections of `engine` are checked out (`TimeoutError` if never)."""
    await until(lambda: queue_pool(engine.pool).checkedout() >= count, timeout_s=timeout_s)


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector for the block.

    A session that was closed and then used again is not closed a second time by anyone: its
    connection goes back only when the garbage collector frees the session, which it does at a
    moment of its own choosing (a session and its transaction refer to each other, so only the
    cycle collector can free them). Paused, a count of such connections is the same every run.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def after_response_app(
    database: SyncDatabase, in_flight: InFlight, async_database: AsyncDatabase | None = None
) -> FastAPI:
    """The background-task, stream and WebSocket routes above, and the threadpool setup's
    routes (``/threadpool/...``, "every other route"), all on `database`'s pool
    (``/async-session/stats`` on `async_database`'s, if given).

    A pool timeout in an HTTP route is a 503, as in the main app. `in_flight` counts what the
    app is still working on. Serve it with ``labkit.infra.uvicorn.uvicorn_in_process`` to see what a
    client of a real server sees (in process, a client's call returns only after the
    background tasks); its sockets with ``labkit.app.client.lab_websocket``.
    """
    app = FastAPI(title="Work that outlives the response")
    add_error_handlers(app)
    app.include_router(threadpool.router)
    app.include_router(tasks_router)
    app.include_router(streams_router)
    app.include_router(sockets_router)
    app.dependency_overrides[get_db] = database.get_db
    app.dependency_overrides[get_session_factory] = lambda: database.SessionLocal
    if async_database is not None:
        async_factory = async_database.AsyncSessionLocal
        app.dependency_overrides[get_async_session_factory] = lambda: async_factory
    app.add_middleware(in_flight.middleware)
    return app
