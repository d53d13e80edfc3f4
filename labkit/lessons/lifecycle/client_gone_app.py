"""The app notebook 08 abandons requests on: routes that wait on the database and note what
reached them.

`client_gone_app` serves one read per route kind (``def`` with a `Session`, ``async def`` with
an `AsyncSession`, and an ``async def`` route with an ``asyncio.timeout`` of its own), on the
shop app's session dependencies, swapped through ``app.dependency_overrides`` for twins that note
what reached their ``yield`` (`noted_session_dependency`). `Notes` keeps, per request, what the
route and the dependency's exit saw; `CancelAfter` is a timeout middleware that cancels the
whole request the asyncio way or the AnyIO way. `labkit.lessons.lifecycle.client_gone` runs the
experiment on it.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

import asyncio
import builtins
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.shop.database import AsyncSessionDep, SessionDep, get_async_db, get_db
from labkit.shop.models import Post, User, UserId

RETURNED = "returned"
"""What `Notes` records when nothing reached the code it watches: it ran to its end."""


def exception_name(exc: BaseException) -> str:
    """The exception's class name, with its module where the name alone would be a built-in's
    (SQLAlchemy's pool ``TimeoutError`` is not the built-in one)."""
    name = type(exc).__name__
    if getattr(builtins, name, type(exc)) is type(exc):
        return name
    return f"{type(exc).__module__}.{name}"


class Notes:
    """What each request's route and session dependency saw, noted from any thread.

    `route` and `exit` count outcomes by name: `RETURNED`, or the exception's class name. In
    ``async def`` code the notes also try one ``await`` right after an exception
    (`awaited_after`): ``"ran"``, or ``"cancelled again"`` where a cancelled AnyIO scope
    cancels every ``await`` until it is left. Each route notes when it began and ended, by user
    id, so the lab can tell that the client left while the route was still waiting.
    """

    def __init__(self) -> None:
        self.route: Counter[str] = Counter()
        self.exit: Counter[str] = Counter()
        self.awaited_after: dict[str, Counter[str]] = {"route": Counter(), "exit": Counter()}
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.answered: dict[int, float] = {}
        """When the server began sending each answer, by user id."""
        self.began_again = 0
        """Sessions that began a second transaction: a request's session begins one, unless
        something closed it and the route used it again (a new checkout nobody gives back)."""
        self._lock = threading.Lock()

    def session_began(self, session: Session, *_args: Any) -> None:
        """SQLAlchemy's ``after_begin`` event: count a session's transactions."""
        with self._lock:
            session.info["transactions"] = session.info.get("transactions", 0) + 1
            if session.info["transactions"] == 2:
                self.began_again += 1

    def _note(self, where: Counter[str], outcome: str) -> None:
        with self._lock:
            where[outcome] += 1

    @contextmanager
    def route_sync(self, key: int) -> Iterator[None]:
        """Around a ``def`` route's work: when it began and ended, and what reached it."""
        self.began[key] = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._note(self.route, exception_name(exc))
            raise
        else:
            self._note(self.route, RETURNED)
        finally:
            self.ended[key] = time.perf_counter()

    @asynccontextmanager
    async def route_async(self, key: int) -> AsyncIterator[None]:
        """The same around an ``async def`` route's work, with one ``await`` after an exception."""
        self.began[key] = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._note(self.route, exception_name(exc))
            await self._try_await("route")
            raise
        else:
            self._note(self.route, RETURNED)
        finally:
            self.ended[key] = time.perf_counter()

    @contextmanager
    def exit_sync(self) -> Iterator[None]:
        """Around a sync dependency's ``yield``: what reached it (FastAPI throws it in there)."""
        try:
            yield
        except BaseException as exc:
            self._note(self.exit, exception_name(exc))
            raise
        else:
            self._note(self.exit, RETURNED)

    @asynccontextmanager
    async def exit_async(self) -> AsyncIterator[None]:
        """Around an async dependency's ``yield``, with one ``await`` after an exception."""
        try:
            yield
        except BaseException as exc:
            self._note(self.exit, exception_name(exc))
            await self._try_await("exit")
            raise
        else:
            self._note(self.exit, RETURNED)

    async def _try_await(self, where: str) -> None:
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:  # a cancellation is what this looks for
            self._note(self.awaited_after[where], "cancelled again")
        else:
            self._note(self.awaited_after[where], "ran")


def get_notes() -> Notes:
    """Each lab app overrides this with its own `Notes` (``app.dependency_overrides``)."""
    raise RuntimeError("serve the routes with client_gone_app(), which gives them their notes")


NotesDep = Annotated[Notes, Depends(get_notes)]


def get_time_limit() -> float:
    """Seconds a time-limited route gives its statements (the lab app sets it)."""
    return 1.0


TimeLimitDep = Annotated[float, Depends(get_time_limit)]


class PostCount(BaseModel):
    user_id: int
    posts: int


router = APIRouter()


def count_posts(db: Session, user_id: int) -> PostCount:
    user = db.get(User, user_id)  # statement 1: waits on the database
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user with id {user_id}")
    posts = db.scalar(select(func.count()).where(Post.author_id == user_id))  # statement 2
    return PostCount(user_id=user_id, posts=posts or 0)


async def count_posts_async(db: AsyncSession, user_id: int) -> PostCount:
    user = await db.get(User, user_id)  # statement 1: the loop serves others meanwhile
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user with id {user_id}")
    posts = await db.scalar(select(func.count()).where(Post.author_id == user_id))
    return PostCount(user_id=user_id, posts=posts or 0)


@router.get("/def/users/{user_id}/posts")
def count_posts_def(user_id: UserId, db: SessionDep, notes: NotesDep) -> PostCount:
    with notes.route_sync(user_id):
        return count_posts(db, user_id)


@router.get("/async/users/{user_id}/posts")
async def count_posts_async_def(user_id: UserId, db: AsyncSessionDep, notes: NotesDep) -> PostCount:
    async with notes.route_async(user_id):
        return await count_posts_async(db, user_id)


@router.get("/async/time-limited/users/{user_id}/posts")
async def count_posts_time_limited(
    user_id: UserId, db: AsyncSessionDep, notes: NotesDep, time_limit_s: TimeLimitDep
) -> PostCount:
    try:
        async with asyncio.timeout(time_limit_s), notes.route_async(user_id):
            return await count_posts_async(db, user_id)
    except TimeoutError:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT, detail="the database took too long"
        ) from None


class CancelAfter:
    """A timeout middleware, as often written: it cancels the request after `seconds` and
    answers ``504``.

    `by` is how it cancels: ``"asyncio"`` (``asyncio.timeout``: one ``task.cancel()``, as
    ``asyncio.wait_for`` does) or ``"anyio"`` (``anyio.fail_after``: a cancel scope, which
    cancels every ``await`` inside it until it is left, unless shielded). Pure ASGI, so the
    cancellation reaches the route (Starlette's ``BaseHTTPMiddleware`` runs the app in a task
    of its own, where a ``wait_for`` around ``call_next`` does not reach it).
    """

    def __init__(self, app: ASGIApp, seconds: float, by: Literal["asyncio", "anyio"]) -> None:
        self.app, self.seconds, self.by = app, seconds, by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if self.by == "asyncio":
                async with asyncio.timeout(self.seconds):
                    await self.app(scope, receive, noting_send)
            else:
                with anyio.fail_after(self.seconds):
                    await self.app(scope, receive, noting_send)
        except TimeoutError:
            if not started:
                answer = JSONResponse({"detail": "the request took too long"}, status_code=504)
                await answer(scope, receive, send)


def client_gone_app(
    database: SyncDatabase | AsyncDatabase,
    notes: Notes,
    time_limit_s: float,
    cancel_by: Literal["asyncio", "anyio"] | None = None,
) -> FastAPI:
    """The routes above on `database`, with a session dependency that notes what reaches its
    ``yield`` (`noted_session_dependency`). `time_limit_s` is the time-limited route's limit,
    and `CancelAfter`'s, around it all, if `cancel_by` names a way to cancel."""
    app = FastAPI(title="The client goes away")
    app.include_router(router)
    app.dependency_overrides[get_notes] = lambda: notes
    app.dependency_overrides[get_time_limit] = lambda: time_limit_s
    dependency = noted_session_dependency(database, notes)
    app.dependency_overrides[get_async_db if isinstance(database, AsyncDatabase) else get_db] = (
        dependency
    )
    if cancel_by is not None:
        app.add_middleware(CancelAfter, seconds=time_limit_s, by=cancel_by)
    return app


def noted_session_dependency(
    database: SyncDatabase | AsyncDatabase, notes: Notes
) -> Callable[[], Any]:
    """The shop app's ``get_db`` (or ``get_async_db``), with `Notes` around its ``yield``."""
    if isinstance(database, AsyncDatabase):
        factory = database.AsyncSessionLocal

        async def get_async_db_noted() -> AsyncIterator[AsyncSession]:
            async with factory() as session, notes.exit_async():
                yield session

        return get_async_db_noted
    session_factory = database.SessionLocal

    def get_db_noted() -> Iterator[Session]:
        with session_factory() as session, notes.exit_sync():
            yield session

    return get_db_noted
