"""The lab's app under uvicorn in processes of its own: `run_workers`, and `uvicorn_process` to
run it for a block.

`run_workers(ServeOptions(...))` is the one way the lab serves its app outside the notebook's
process. ``python -m labkit serve`` calls it with what its command line said;
`uvicorn_process` starts ``python -m labkit.app.serve``, which reads `ServeOptions` as JSON from
its stdin (a database password stays off the command line) and calls it too.

This is uvicorn's own multi-process mode: a supervisor binds the socket and starts N worker
processes that accept connections from it. Each worker imports the app anew, so each has its own
event loop, AnyIO threads, engines and pools, and its own interpreter lock, which is the point:
one process runs its Python on one core at a time.

uvicorn builds each worker's app from an import string (`app_from_environment`), and nothing
but the environment reaches a worker that way: `run_workers` puts its `ServeOptions` there as
JSON (``LAB_SERVE_OPTIONS``, read by labkit.settings). Each worker names its database
connections (``application_name`` in ``pg_stat_activity``) and its answers (the
``X-Lab-Worker`` header) after its process id, so a notebook can tell which process did what.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import URL, make_url
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.app.create import LabApp, create_app
from labkit.app.databases import EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.infra.jupyter_proxy import ProxyPrefix
from labkit.infra.ports import LOOPBACK, free_port
from labkit.infra.uvicorn import Server, listening_process
from labkit.settings import DATABASE_URL, SERVE_OPTIONS, lab_settings

WORKER_HEADER = "x-lab-worker"
ENTRY_POINT = "labkit.app.serve"
"""The module `uvicorn_process` runs: ``python -m labkit.app.serve`` (`main`)."""
FACTORY = f"{ENTRY_POINT}:app_from_environment"


def worker_name(pid: int | None = None) -> str:
    """How a worker process names itself: ``lab worker PID``."""
    return f"lab worker {os.getpid() if pid is None else pid}"


@dataclass(frozen=True)
class ServeOptions:
    """How to serve the lab's app: its database and engines, and uvicorn's port and workers."""

    database_url: str | None = None
    """The full URL, password included (None: `DATABASE_URL`, else the SQLite file, as the
    shop app decides). It travels as JSON to the workers, never on a command line."""
    engine: EngineOptions = field(default_factory=EngineOptions)
    threads: int | None = None
    """AnyIO's thread limit in each worker (None: AnyIO's 40)."""
    port: int = 8000
    workers: int = 1
    ready_folder: str | None = None
    """Where each worker notes that it has started (a file named after its pid), for
    `uvicorn_process` to wait for them all."""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "engine": asdict(self.engine)})

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        given = json.loads(text)
        return cls(**{**given, "engine": EngineOptions(**given["engine"])})


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


def app_from_environment() -> LabApp:
    """One worker's app (uvicorn's factory): `create_app` with the `ServeOptions` that
    `run_workers` left in the environment; tables are already seeded by the parent."""
    given = lab_settings().serve_options
    if given is None:
        raise RuntimeError(f"no {SERVE_OPTIONS} in the environment: start it with run_workers")
    serving = ServeOptions.from_json(given)
    options = replace(serving.engine, application_name=worker_name())
    app = create_app(serving.database_url, options, threads=serving.threads, seed=False)
    app.fastapi.add_middleware(NameTheWorker)
    app.fastapi.add_middleware(ProxyPrefix)  # behind Jupyter's proxy, /docs links to the app
    started = app.fastapi.router.lifespan_context

    @asynccontextmanager
    async def lifespan(fastapi: FastAPI) -> AsyncIterator[None]:
        async with started(fastapi):
            if serving.ready_folder is not None:
                Path(serving.ready_folder, str(os.getpid())).touch()
            yield

    app.fastapi.router.lifespan_context = lifespan
    return app


def run_workers(serving: ServeOptions) -> None:
    """Seed the database once, then serve the app with `serving.workers` processes on
    127.0.0.1 until Ctrl+C (or SIGTERM, which stops the workers too)."""
    import uvicorn

    database = SyncDatabase.create(serving.database_url)
    try:
        create_and_seed(database.engine)
    finally:
        database.dispose()
    os.environ[SERVE_OPTIONS] = serving.to_json()  # for the workers: see the module's doc
    uvicorn.run(
        FACTORY,
        factory=True,
        host=LOOPBACK,
        port=serving.port,
        workers=serving.workers,
        log_level="warning",
        access_log=False,
    )


@contextmanager
def uvicorn_process(
    database_url: str | URL,
    options: EngineOptions | None = None,
    *,
    workers: int = 1,
    threads: int | None = None,
    app: str | None = None,
    startup_timeout_s: float = 30.0,
) -> Iterator[Server]:
    """The lab's app with `options`, served by `run_workers` in a process of its own on a free
    port for the block, with `workers` processes; yields the `Server` once every worker runs.

    With `app` (``MODULE:APP``), run ``uvicorn MODULE:APP`` instead: an app as its author serves
    it, with nothing of the lab's (no engine options, so no simulated latency either); its
    database goes to it as it reads it, in `DATABASE_URL`.
    """
    port = free_port()
    url = make_url(database_url).render_as_string(hide_password=False)
    if app is not None:
        if options is not None or threads is not None:
            raise ValueError("engine options and threads are the lab's app's, not uvicorn's")
        command = [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port)]
        command += ["--workers", str(workers)]
        child_env = {**os.environ, DATABASE_URL: url}  # the environment the child starts with
        with listening_process(
            command, port, env=child_env, startup_timeout_s=startup_timeout_s
        ) as server:
            yield server
        return
    with tempfile.TemporaryDirectory(prefix="lab-serve-") as ready:
        serving = ServeOptions(url, options or EngineOptions(), threads, port, workers, ready)
        with listening_process(
            [sys.executable, "-m", ENTRY_POINT],
            port,
            input_text=serving.to_json(),
            ready=Path(ready),
            workers=workers,
            startup_timeout_s=startup_timeout_s,
        ) as server:
            yield server


def main() -> None:
    """``python -m labkit.app.serve``: `run_workers` with the `ServeOptions` JSON on stdin."""
    run_workers(ServeOptions.from_json(sys.stdin.read()))


if __name__ == "__main__":
    main()
