"""The lab's app over a real socket: under uvicorn in this process, or in processes of its own.

In process, through httpx's ASGI transport, a request returns only once the app has finished
with it: whatever the app does after sending the response (a ``yield`` dependency's exit code,
background tasks) happens before the client sees the answer. `serving` runs an app under
uvicorn on this event loop, on a real loopback socket, so a notebook sees what a client of a
real server sees, and keeps every object the app touches in reach.

In process, the app and the load also share one event loop and one interpreter lock. To check
that this does not distort the numbers, `served` starts the app under uvicorn in a process of
its own (on 127.0.0.1, a free port) and `drive_elsewhere` loads it from a third process, as a
real client would. All three end with the block or the call: nothing is left listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import psutil
import uvicorn
from sqlalchemy.engine import URL, make_url
from starlette.types import ASGIApp

from labkit.infra.ports import LOOPBACK, free_port
from labkit.infra.reaper import cancel, terminate, when_this_process_ends

READY_FOLDER = "LAB_SERVE_READY"
"""Where each worker of the lab's ``serve`` notes that it has started (a file named after its
process id): the first answer to a request proves only that one worker is up, and which
worker accepts a connection is the kernel's choice, so asking until each has answered can
take long."""


@asynccontextmanager
async def serving(app: ASGIApp, *, startup_timeout_s: float = 10.0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on this event loop, on a free loopback port, for the block.

    Yields the base URL once uvicorn listens (the app's lifespan has run). On the way out the
    server stops as on Ctrl+C: it waits for the requests in flight, then runs the lifespan's
    shutdown. Any ``httpx.AsyncClient`` on the same loop talks to it over a real socket.
    """
    port = free_port()
    config = uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    running = asyncio.ensure_future(server.serve())
    try:
        async with asyncio.timeout(startup_timeout_s):
            while not server.started:
                if running.done():  # it stopped before listening: say why
                    running.result()
                    raise RuntimeError(f"uvicorn stopped before listening on port {port}")
                await asyncio.sleep(0.005)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        await running


@dataclass(frozen=True)
class Server:
    """A server `served` started: its base URL and the process that listens there."""

    url: str
    pid: int

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None  # `served` always names one
        return port

    def processes(self) -> list[psutil.Process]:
        """The server's process and every process it started (uvicorn's workers)."""
        main = psutil.Process(self.pid)
        return [main, *main.children(recursive=True)]


@contextmanager
def served(
    database_url: str | URL,
    *,
    latency_ms: float = 0.0,
    workers: int = 1,
    startup_timeout_s: float = 30.0,
    extra_args: tuple[str, ...] = (),
    app: str | None = None,
) -> Iterator[Server]:
    """Run ``python -m labkit serve`` for the block, with `workers` processes; yield the
    `Server` once ``/health`` answers.

    With `app` (``MODULE:APP``), run ``uvicorn MODULE:APP`` instead: an app as its author serves
    it, with nothing of the lab's (so no simulated latency either).
    The database URL goes through the environment (``DATABASE_URL``), not the command line,
    where other users of the machine could read a password. On the way out the server is
    stopped as ``kill`` stops it (SIGTERM), and uvicorn stops its workers.
    """
    port = free_port()
    url = make_url(database_url).render_as_string(hide_password=False)
    if app is None:
        command = [sys.executable, "-m", "labkit", "serve", "--port", str(port)]
        command += ["--latency", str(latency_ms), "--workers", str(workers), *extra_args]
    elif latency_ms:
        raise ValueError("simulated latency is the lab's app's option, not uvicorn's")
    else:
        command = [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port)]
        command += ["--workers", str(workers), *extra_args]
    base = f"http://{LOOPBACK}:{port}"
    # stderr to a file, not a pipe: a pipe nobody reads fills up and stalls a chatty server.
    with (
        tempfile.TemporaryDirectory(prefix="lab-serve-") as ready,
        tempfile.TemporaryFile("w+") as errors,
    ):
        server = subprocess.Popen(
            command,
            env={**os.environ, "DATABASE_URL": url, READY_FOLDER: ready},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        key = f"stop server {server.pid}"
        when_this_process_ends(key, terminate, pid=server.pid)  # a killed kernel stops it too
        try:
            _wait_until_healthy(server, base, errors, startup_timeout_s)
            if app is None:
                _wait_for_workers(server, Path(ready), workers, startup_timeout_s)
            yield Server(base, server.pid)
        finally:
            cancel(key)
            _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop as Ctrl+C does (uvicorn then stops its workers), or, after 10 s, kill it and all
    it started."""
    started = psutil.Process(server.pid).children(recursive=True)
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        for process in [*started, psutil.Process(server.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        server.wait()


def _wait_until_healthy(
    server: subprocess.Popen[bytes], base: str, errors: IO[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            errors.seek(0)
            raise RuntimeError(f"the server stopped: {errors.read()[-500:]}")
        try:
            httpx.get(f"{base}/health", timeout=1).raise_for_status()
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health in time") from None
            time.sleep(0.1)


def _wait_for_workers(
    server: subprocess.Popen[bytes], ready: Path, workers: int, timeout_s: float
) -> None:
    """Until each of the `workers` processes has started its app (`READY_FOLDER`)."""
    deadline = time.monotonic() + timeout_s
    while len(list(ready.iterdir())) < workers:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"only {len(list(ready.iterdir()))} of {workers} workers started")
        time.sleep(0.02)


def drive_elsewhere(
    base_url: str, setup: str, *, requests: int, concurrency: int
) -> dict[Hashable, Any]:
    """Run ``python -m labkit drive`` against `base_url` in another process; its result row."""
    command = [sys.executable, "-m", "labkit", "drive", base_url, "--setup", setup]
    command += ["--requests", str(requests), "--concurrency", str(concurrency), "--csv", "-"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    import pandas as pd  # here: a process that only serves never needs it

    (row,) = pd.read_csv(io.StringIO(done.stdout)).to_dict("records")
    return row
