"""Your app served in this process as uvicorn serves it, with the exceptions it raises kept.

`served` runs the app's lifespan through ASGI messages (so a lifespan reaches the app through
any middleware around it), passes its state to each request as uvicorn does, and hands out an
``httpx.AsyncClient`` bound to the app, with the route each request took. A server turns an
exception the app raises into a 500 and logs the traceback; here `AppErrors` keeps it,
counted by type and message, with the first traceback of each: the reason a user needs when a
route fails.
"""

from __future__ import annotations

import asyncio
import sysconfig
import traceback
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.client import BASE_URL
from labkit.probe.app_import import ProbeError

OTHERS_CODE = (
    str(Path(sysconfig.get_paths()["stdlib"]).resolve()),
    str(Path(sysconfig.get_paths()["purelib"]).resolve()),
    str(Path(__file__).resolve().parents[1]),  # labkit
)
"""Folders whose frames a traceback of the app's error leaves out: Python's library, installed
packages (FastAPI, Starlette, SQLAlchemy) and the probe's own."""


def app_traceback(exc: BaseException) -> str:
    """`exc`'s traceback with the app's frames only, as short as a user needs to find the line
    (all frames when none is the app's)."""
    found = traceback.TracebackException.from_exception(exc)
    own = [frame for frame in found.stack if not frame.filename.startswith(OTHERS_CODE)]
    if own:
        found.stack = traceback.StackSummary.from_list(own)
    lines = list(found.format())
    if own:
        lines[0] = "Traceback (most recent call last; the app's frames only):\n"
    return "".join(lines)


@dataclass
class AppErrors:
    """Exceptions the app raised out of its requests, counted by type and the line that raised
    them; each is named by its first message (``LedgerError: ledger out of balance for item
    3``), so one bug with changing messages counts as one."""

    counts: Counter[str] = field(default_factory=Counter)
    tracebacks: dict[str, str] = field(default_factory=dict)
    """The first traceback of each, the app's frames only (`app_traceback`)."""
    _names: dict[tuple[object, ...], str] = field(default_factory=dict)

    def add(self, exc: BaseException) -> None:
        raised_at = traceback.extract_tb(exc.__traceback__)[-1:]
        site = (type(exc).__qualname__, *((f.filename, f.lineno) for f in raised_at))
        name = self._names.get(site)
        if name is None:
            said = f"{type(exc).__qualname__}: {exc}".strip()
            name = self._names[site] = said if len(said) <= 200 else said[:199] + "…"
            self.tracebacks[name] = app_traceback(exc)
        self.counts[name] += 1

    def take(self) -> Counter[str]:
        """The counts so far; they start again from zero (names and tracebacks are kept)."""
        taken, self.counts = self.counts, Counter()
        return taken


@dataclass
class Served:
    """An app started by `served`: a client bound to it, and what a server would see of it."""

    client: httpx.AsyncClient
    errors: AppErrors
    routes: dict[tuple[str, str], Any] = field(default_factory=dict)
    """The route the app's router picked for each method and path, as Starlette leaves it in
    the request's scope (``scope["route"]``): a FastAPI ``APIRoute``, with its dependencies."""


class _Watched:
    """The app, as the client calls it: each request gets the lifespan's state; an exception
    out of the app is noted before it goes on to the client's transport, and the route the
    app picked is noted too."""

    def __init__(
        self,
        app: ASGIApp,
        state: dict[str, Any],
        errors: AppErrors,
        routes: dict[tuple[str, str], Any],
    ) -> None:
        self.app, self.state, self.errors, self.routes = app, state, errors, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}  # a shallow copy per request, as uvicorn
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            self.errors.add(exc)
            raise
        finally:
            if "route" in scope:  # routing updates the scope it was given, through any wrapper
                self.routes[scope.get("method", ""), scope["path"]] = scope["route"]


async def _answer(app_sent: asyncio.Queue[Message], running: asyncio.Task[None]) -> Message | None:
    """The app's next lifespan message, or None if the app returned or raised first."""
    waiting = asyncio.ensure_future(app_sent.get())
    await asyncio.wait({waiting, running}, return_when=asyncio.FIRST_COMPLETED)
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    return None


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Start `app` through the ASGI lifespan protocol, yield its state, shut it down.

    As uvicorn's default (``--lifespan auto``), an app that does not speak the protocol (it
    raises or returns at once) is served without it. A startup that fails stops the probe with
    the app's own message.
    """
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    app_sent: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    running = asyncio.ensure_future(app(scope, to_app.get, app_sent.put))
    await to_app.put({"type": "lifespan.startup"})
    started = await _answer(app_sent, running)
    if started is not None and started["type"] == "lifespan.startup.failed":
        with suppress(Exception):
            await running
        raise ProbeError(f"the app's startup failed: {started.get('message') or 'no message'}")
    if started is None:  # no lifespan: nothing to shut down
        with suppress(Exception):
            running.result()
        yield state
        return
    try:
        yield state
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await _answer(app_sent, running)
        with suppress(Exception):
            await running


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[Served]:
    """`app` started, a client bound to it, the exceptions its requests raise and the routes
    they took.

    As under a server, an exception is an answer (a 500 if nothing was sent yet), not an error
    in the caller: a load run counts it as a failed request.
    """
    errors, routes = AppErrors(), dict[tuple[str, str], Any]()
    async with lifespan(app) as state:
        watched = _Watched(app, state, errors, routes)
        transport = httpx.ASGITransport(app=watched, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield Served(client, errors, routes)
