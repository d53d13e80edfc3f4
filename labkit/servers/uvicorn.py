"""The lab's app over a real socket: ``python -m labkit serve`` and ``drive`` as child processes.

In process, the app and the load share one event loop and one interpreter lock. To check that
this does not distort the numbers, `served` starts the app under uvicorn in a process of its
own (on 127.0.0.1, a free port) and `drive_elsewhere` loads it from a third process, as a real
client would. Both end with the block or the call: nothing is left listening.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx
from sqlalchemy.engine import URL, make_url

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; a race with another program is unlikely)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextmanager
def served(
    database_url: str | URL,
    *,
    latency_ms: float = 0.0,
    startup_timeout_s: float = 30.0,
    extra_args: tuple[str, ...] = (),
    app: str | None = None,
) -> Iterator[str]:
    """Run ``python -m labkit serve`` for the block; yield its base URL once ``/health`` answers.

    With `app` (``MODULE:APP``), run ``uvicorn MODULE:APP`` instead: an app as its author serves
    it, with nothing of the lab's (so no simulated latency either).
    The database URL goes through the environment (``DATABASE_URL``), not the command line,
    where other users of the machine could read a password.
    """
    port = free_port()
    url = make_url(database_url).render_as_string(hide_password=False)
    if app is None:
        command = [sys.executable, "-m", "labkit", "serve", "--port", str(port)]
        command += ["--latency", str(latency_ms), *extra_args]
    elif latency_ms:
        raise ValueError("simulated latency is the lab's app's option, not uvicorn's")
    else:
        command = [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port)]
        command += [*extra_args]
    base = f"http://{LOOPBACK}:{port}"
    # stderr to a file, not a pipe: a pipe nobody reads fills up and stalls a chatty server.
    with tempfile.TemporaryFile("w+") as errors:
        server = subprocess.Popen(
            command,
            env={**os.environ, "DATABASE_URL": url},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            _wait_until_healthy(server, base, errors, startup_timeout_s)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_healthy(
    server: subprocess.Popen, base: str, errors: IO[str], timeout_s: float
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


def drive_elsewhere(base_url: str, setup: str, *, requests: int, concurrency: int) -> dict:
    """Run ``python -m labkit drive`` against `base_url` in another process; its result row."""
    command = [sys.executable, "-m", "labkit", "drive", base_url, "--setup", setup]
    command += ["--requests", str(requests), "--concurrency", str(concurrency), "--csv", "-"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    (row,) = csv.DictReader(io.StringIO(done.stdout))
    return {key: _number(value) for key, value in row.items()}


def _number(text: str) -> str | int | float:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
