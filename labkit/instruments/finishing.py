"""A request whose client gives up still runs to its end, as under a real server.

`httpx.ASGITransport` runs the app inside the client's own task, so in process a client that gives
up (``task.cancel()``, ``asyncio.timeout``, ``asyncio.wait_for``) cancels the request itself.
FastAPI runs a ``def`` route, and a sync dependency's setup and teardown, in anyio worker threads,
and shields the wait for them; but anyio's shields hold against anyio's own cancellation only.
Cancelled the asyncio way, the request stops waiting at once: the dependency closes the session
while the worker thread is still running the route on it, and the route's next query checks out
a connection that nothing will ever give back.

A server such as uvicorn does not cancel a request when its client disconnects: the request
finishes, and its dependencies clean up as written. `FinishEveryRequest` gives the in-process app
the same behaviour: each request runs in a task of its own, which the caller's cancellation does
not reach.

Those tasks belong to a `RequestGroup`, an AnyIO task group the app's lifespan keeps open. That
matters for speed: AnyIO keeps an idle worker thread for reuse only while the *root task* it
started it for is alive, and where no task runs the loop's ``run_until_complete`` (a Jupyter
kernel runs its loop with ``run_forever``), it takes as root the top of the current AnyIO task
tree. A request in a bare ``asyncio`` task would be its own root: a worker thread started and
stopped for every request to a ``def`` route or a sync dependency, a fraction of a millisecond
more per request (`labkit.lessons.concurrency.thread_reuse` measures it; notebook 05 prints
its share of ``s``). In the group, the root is the task that
opened it, which lives as long as the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("labkit.cancellation")


class RequestGroup:
    """The task group `FinishEveryRequest` runs requests in, open while the app's lifespan runs."""

    def __init__(self) -> None:
        self._group: TaskGroup | None = None
        # Without an open group (an app driven without its lifespan), a request runs in a bare
        # task; asyncio keeps only weak references to tasks, so these are held until done.
        self._bare: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Keep the group open for the block; on the way out, wait for requests still running."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None

    def start(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp
    ) -> asyncio.Future[None]:
        """Run one request in the group; the future it returns ends when the request does.

        A caller that awaits the future and is cancelled cancels the future, not the request:
        the request runs on, and an error it raises then is logged, there being no one to tell.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def serve_request() -> None:
            try:
                await app(scope, receive, send)
            except Exception as exc:  # the request's error is its caller's, not the group's
                if done.cancelled():
                    log.info("request ended after its caller left: %r", exc)
                else:
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)
            finally:
                if not done.done():  # cancelled: the group is closing
                    done.cancel()

        if self._group is not None:
            self._group.start_soon(serve_request)
        else:
            task = asyncio.create_task(serve_request())
            self._bare.add(task)
            task.add_done_callback(self._bare.discard)
        return done


class FinishEveryRequest:
    """ASGI middleware: a cancelled caller stops waiting; its request runs on to the end."""

    def __init__(self, app: ASGIApp, requests: RequestGroup) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Awaited as it is, not through asyncio.shield: the caller's cancellation cancels this
        # future only (see `RequestGroup.start`), and a shield costs every request an extra
        # future and a turn of the event loop.
        await self.requests.start(scope, receive, send, self.app)
