"""Servers on a real socket: uvicorn in this process, or a server process of its own.

In process, through httpx's ASGI transport, a request returns only once the app has finished
with it: whatever the app does after sending the response (a ``yield`` dependency's exit code,
background tasks) happens before the client sees the answer. `uvicorn_in_process` runs an app
under uvicorn on this event loop, on a real loopback socket, so a notebook sees what a client
of a real server sees, and keeps every object the app touches in reach.

In process, the app and the load also share one event loop and one interpreter lock. To check
that this does not distort the numbers, `listening_process` runs a server in a process of its
own (on 127.0.0.1, a free port) until the block ends: labkit.app.serve's `uvicorn_process`
starts the lab's app that way. Either way nothing is left listening after the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import psutil
import uvicorn
from starlette.types import ASGIApp

from labkit.infra.ports import LOOPBACK, free_port
from labkit.infra.reaper import cancel, terminate, when_this_process_ends


@asynccontextmanager
async def uvicorn_in_process(
    app: ASGIApp, *, startup_timeout_s: float = 10.0
) -> AsyncIterator[str]:
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
    """A server `listening_process` started: its base URL and the process that listens there."""

    url: str
    pid: int

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None  # `listening_process` always names one
        return port

    def processes(self) -> list[psutil.Process]:
        """The server's process and every process it started (uvicorn's workers)."""
        main = psutil.Process(self.pid)
        return [main, *main.children(recursive=True)]


@contextmanager
def listening_process(
    command: list[str],
    port: int,
    *,
    input_text: str = "",
    env: Mapping[str, str] | None = None,
    ready: Path | None = None,
    workers: int = 1,
    startup_timeout_s: float = 30.0,
) -> Iterator[Server]:
    """Run `command`, a server that will listen on 127.0.0.1:`port`, for the block; yield the
    `Server` once ``/health`` answers (and, with `ready`, once `workers` files are in it: one
    per worker process that has started).

    `input_text` is written to the command's stdin, which is then closed: settings that hold a
    password go there, not on the command line, where other users of the machine could read
    them. `env`: the command's environment (default: this process's). On the way out the
    server is stopped as ``kill`` stops it (SIGTERM), and uvicorn stops its workers; a killed
    kernel stops it too (labkit.infra.reaper).
    """
    base = f"http://{LOOPBACK}:{port}"
    # stderr to a file, not a pipe: a pipe nobody reads fills up and stalls a chatty server.
    with tempfile.TemporaryFile("w+") as errors:
        server = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
        key = f"stop server {server.pid}"
        when_this_process_ends(key, terminate, pid=server.pid)
        try:
            assert server.stdin is not None  # stdin=PIPE
            # A server that stopped at once closed its end: the wait below says why.
            with contextlib.suppress(BrokenPipeError), server.stdin:
                server.stdin.write(input_text)
            _wait_until_healthy(server, base, errors, startup_timeout_s)
            if ready is not None:
                _wait_for_workers(server, ready, workers, startup_timeout_s)
            yield Server(base, server.pid)
        finally:
            cancel(key)
            _stop(server)


def _stop(server: subprocess.Popen[str]) -> None:
    """Stop as Ctrl+C does (uvicorn then stops its workers), or, after 10 s, kill it and all
    it started. One that has already ended (and was reaped) has nothing left to stop."""
    if server.poll() is not None:
        return
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
    server: subprocess.Popen[str], base: str, errors: IO[str], timeout_s: float
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
    server: subprocess.Popen[str], ready: Path, workers: int, timeout_s: float
) -> None:
    """Until each of the `workers` processes has noted in `ready` that it has started: the
    first answer to a request proves only that one worker is up, and which worker accepts a
    connection is the kernel's choice, so asking until each has answered can take long."""
    deadline = time.monotonic() + timeout_s
    while len(list(ready.iterdir())) < workers:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"only {len(list(ready.iterdir()))} of {workers} workers started")
        time.sleep(0.02)
