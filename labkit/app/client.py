"""Talk to an app the way a test or a notebook cell does.

`httpx.ASGITransport` calls the app directly, with no socket, but it does not run the app's
lifespan; `lab_client` does, so the tables exist and the engines are disposed afterwards.
`lab_websocket` opens a WebSocket to an app in this process, on the same event loop.
`event_stream` reads a Server-Sent Events response one event at a time, from any
``httpx.AsyncClient`` (httpx's ASGI transport hands over a response only once it has ended, so
a stream that stays open needs a real server: ``labkit.infra.uvicorn.uvicorn_in_process``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Scope
from starlette.websockets import WebSocketDisconnect

from labkit.app.create import LabApp

BASE_URL = "http://lab"


@asynccontextmanager
async def lab_client(
    app: FastAPI | LabApp, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """Start `app` (its lifespan), yield a client bound to it, stop it on the way out.

    `app` is any FastAPI app, or a `LabApp` from `create_app`.

    By default an error the app raises is raised in the caller too, as a test wants. With
    ``raise_app_exceptions=False`` the client gets whatever the app had sent before the error,
    as a client of a real server does (the error then stays on the server's side).
    """
    fastapi = app.fastapi if isinstance(app, LabApp) else app
    async with fastapi.router.lifespan_context(fastapi):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


class LabWebSocket:
    """The client's end of one WebSocket to an app in this process: text in, text out.

    Messages travel through two queues on the current event loop, so sockets opened with
    `lab_websocket`, requests sent through `lab_client` and the app's own tasks all run together
    on one loop, as they would in one server process.
    """

    def __init__(self) -> None:
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._accepted = False
        self._ended = False  # closed by either side, or the app returned
        self._error_raised = False
        self._running: asyncio.Future[None] | None = None

    def _start(self, app: ASGIApp, scope: Scope) -> None:
        self._to_app.put_nowait({"type": "websocket.connect"})
        self._running = asyncio.ensure_future(app(scope, self._to_app.get, self._app_sends))

    async def _app_sends(self, message: Message) -> None:
        """The ASGI ``send`` the app calls. A message the socket's state does not allow raises
        in the app, with uvicorn's words: an HTTP answer (``websocket.http.response.start``)
        once the socket is accepted, for one."""
        allowed = ("websocket.send", "websocket.close")
        if not self._accepted:
            allowed = ("websocket.accept", "websocket.close")
        if message["type"] not in allowed:
            expected = " or ".join(f"'{kind}'" for kind in allowed)
            raise RuntimeError(f"Expected ASGI message {expected}, but got '{message['type']}'.")
        self._accepted = self._accepted or message["type"] == "websocket.accept"
        await self._from_app.put(message)

    async def _next(self) -> Message:
        """The app's next message. If the app ends first, its error is raised here, as
        `lab_client` raises an app's error in its caller; an app that returns without closing
        the socket counts as a close with code 1006, as a browser reports a dropped connection."""
        assert self._running is not None, "not started"
        if self._from_app.empty() and not self._running.done():
            waiting = asyncio.ensure_future(self._from_app.get())
            racing: set[asyncio.Future[Any]] = {waiting, self._running}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            waiting.cancel()
        if not self._from_app.empty():
            return self._from_app.get_nowait()
        self._ended = True
        if self._running.exception() is not None:
            self._error_raised = True
            self._running.result()
        return {"type": "websocket.close", "code": 1006, "reason": "the app ended the socket"}

    async def _next_open(self) -> Message:
        """The app's next message; `WebSocketDisconnect` if it is a close."""
        message = await self._next()
        if message["type"] == "websocket.close":
            self._ended = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def send_text(self, text: str) -> None:
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def receive_text(self) -> str:
        """The app's next text message; `WebSocketDisconnect` if it closed the socket instead."""
        text: str = (await self._next_open())["text"]
        return text

    async def close(self, code: int = 1000) -> None:
        """Close from the client's side (unless already closed), then wait for the app to finish
        with the socket; an error it raises meanwhile is raised here."""
        assert self._running is not None, "not started"
        if not self._ended:
            self._ended = True
            await self._to_app.put({"type": "websocket.disconnect", "code": code})
        if not self._error_raised:
            await self._running


@asynccontextmanager
async def lab_websocket(app: ASGIApp, path: str) -> AsyncIterator[LabWebSocket]:
    """Open a WebSocket to `app` at `path` in this process; close it (code 1000) on the way out.

    Starlette's ``TestClient`` can do this too, but it runs the app on an event loop of its own
    in another thread, so its sockets cannot share a loop with `lab_client`'s requests. The app's
    lifespan is not run here: open sockets inside a `lab_client` block for that. An error the app
    raises is raised in the caller, from the call that was waiting for the app.
    """
    socket = LabWebSocket()
    socket._start(
        app,
        {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("lab", 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"lab")],
            "subprotocols": [],
        },
    )
    try:
        await socket._next_open()  # the accept (`_app_sends` allows nothing else)
        yield socket
    finally:
        await socket.close()


class EventStream:
    """An open Server-Sent Events response, read one event at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        # Kept, not re-made per call: httpx closes the connection when a line iterator it
        # handed out is garbage collected, which would end the stream on the server too.
        # httpx's annotation says AsyncIterator; it returns an async generator, whose aclose()
        # `event_stream` calls.
        self._lines = cast(AsyncGenerator[str, None], response.aiter_lines())

    async def next_data(self) -> str:
        """The ``data`` of the next event (keep-alive comments skipped)."""
        async for line in self._lines:
            if line.startswith("data:"):
                return line.removeprefix("data:").strip()
        raise EOFError("the server ended the stream")


@asynccontextmanager
async def event_stream(client: httpx.AsyncClient, path: str) -> AsyncIterator[EventStream]:
    """``GET`` `path` as an ``EventSource`` does, keep the stream open for the block, then close
    the connection: the server sees its client leave, and its generator is cancelled."""
    headers = {"Accept": "text/event-stream"}
    async with client.stream("GET", path, headers=headers) as response:
        stream = EventStream(response)
        try:
            yield stream
        finally:
            await stream._lines.aclose()
