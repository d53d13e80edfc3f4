"""The lab's app in several processes: ``python -m labkit serve --workers N``.

This is uvicorn's own multi-process mode: a supervisor binds the socket and starts N worker
processes that accept connections from it. Each worker imports the app anew, so each has its own
event loop, AnyIO threads, engines and pools, and its own interpreter lock, which is the point:
one process runs its Python on one core at a time.

uvicorn builds each worker's app from an import string (`app_from_environment`), so what the
command line said reaches the workers through the environment, as JSON. Each worker names its
database connections (``application_name`` in ``pg_stat_activity``) and its answers (the
``X-Lab-Worker`` header) after its process id, so a notebook can tell which process did what.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.create import create_app
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.infra.jupyter_proxy import ProxyPrefix
from labkit.infra.ports import LOOPBACK
from labkit.infra.uvicorn import READY_FOLDER

SETTINGS = "LAB_SERVE_SETTINGS"
"""The environment variable that carries `ServeSettings` from ``serve`` to its workers."""
WORKER_HEADER = "x-lab-worker"


def worker_name(pid: int | None = None) -> str:
    """How a worker process names itself: ``lab worker PID``."""
    return f"lab worker {os.getpid() if pid is None else pid}"


@dataclass(frozen=True)
class ServeSettings:
    """What ``serve`` was told, as each worker needs it: engine options and the thread limit."""

    options: EngineOptions
    threads: int | None = None

    def to_json(self) -> str:
        return json.dumps({"options": asdict(self.options), "threads": self.threads})

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        given = json.loads(text)
        return cls(EngineOptions(**given["options"]), given["threads"])


class NameTheWorker:
    """ASGI middleware: every HTTP answer says which process served it (``X-Lab-Worker``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (WORKER_HEADER.encode(), worker_name().encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, named)


def app_from_environment() -> FastAPI:
    """One worker's app (uvicorn's factory): `create_app` on `DATABASE_URL`, with the settings
    ``serve`` put in the environment; tables are already seeded by the parent."""
    given = os.environ.get(SETTINGS)
    settings = ServeSettings.from_json(given) if given else ServeSettings(EngineOptions())
    options = replace(settings.options, application_name=worker_name())
    app = create_app(None, options, threads=settings.threads, seed=False)
    app.add_middleware(NameTheWorker)
    app.add_middleware(ProxyPrefix)  # behind Jupyter's proxy, /docs links to the app
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with started(app):
            if folder := os.environ.get(READY_FOLDER):  # `served` waits for every worker
                Path(folder, str(os.getpid())).touch()
            yield

    app.router.lifespan_context = lifespan
    return app


def serve(settings: ServeSettings, *, port: int, workers: int = 1) -> None:
    """Seed the database `DATABASE_URL` names once, then serve the app with `workers` processes
    on 127.0.0.1 until Ctrl+C (or SIGTERM, which stops the workers too)."""
    import uvicorn

    database = SyncDatabase.create()
    try:
        create_and_seed(database.engine)
    finally:
        database.dispose()
    os.environ[SETTINGS] = settings.to_json()
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        host=LOOPBACK,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
