"""When a request's response goes out, seen from ASGI middleware: what the lesson apps log.

The app hands its response to the server as ASGI messages: ``http.response.start`` (status and
headers), then ``http.response.body`` until one says there is no more. Once the last one has been
handed over, the response is the server's to send, whatever the app still does afterwards (a
``yield`` dependency's exit code, background tasks). `ResponseWatch` calls a hook at each of
those moments; a lesson subclasses it to log what it needs.

Pure ASGI, not `BaseHTTPMiddleware`, which would run the app in another task and buffer
streamed responses.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ResponseWatch:
    """ASGI middleware that calls its hooks as an HTTP request goes through the app.

    In order: `request_starts`, `response_starts` (with the status), `body_sent` (the last of
    the body handed to the server), then `request_ends` once the app has returned, or `raised`
    if it raised (the error goes on to the server). Each does nothing unless overridden.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request_starts(self) -> None: ...
    def response_starts(self, status: int) -> None: ...
    def body_sent(self, status: int) -> None: ...
    def raised(self, exc: Exception) -> None: ...
    def request_ends(self) -> None: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watched_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                status.append(message["status"])
                self.response_starts(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self.body_sent(status[0])

        self.request_starts()
        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            self.raised(exc)
            raise
        self.request_ends()
