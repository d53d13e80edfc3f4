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
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("labkit.cancellation")


class FinishEveryRequest:
    """ASGI middleware: a cancelled caller stops waiting; its request runs on to the end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # asyncio keeps only weak references to tasks: hold each request until it is done.
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def serve_request() -> None:
            await self.app(scope, receive, send)

        request = asyncio.create_task(serve_request())
        self._running.add(request)
        request.add_done_callback(self._running.discard)
        try:
            await asyncio.shield(request)
        except asyncio.CancelledError:
            request.add_done_callback(_note_failure_after_caller_left)
            raise


def _note_failure_after_caller_left(request: asyncio.Task[None]) -> None:
    """The only trace of an error in a request whose caller had gone (there is no one to tell)."""
    if not request.cancelled() and request.exception() is not None:
        log.info("request ended after its caller left: %r", request.exception())
