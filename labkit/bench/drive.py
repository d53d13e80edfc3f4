"""The load driver against a server elsewhere: `drive`, and `drive_elsewhere` to run it in a
process of its own.

In process, the load and the app share one event loop and one interpreter lock. To check that
this does not distort the numbers, the app is served in a process of its own
(labkit.app.serve's `uvicorn_process`) and `drive_elsewhere` loads it from a third one, as a
real client would: ``python -m labkit.bench.drive`` reads `DriveOptions` as JSON on its stdin
and writes the result's row as JSON on its stdout. ``python -m labkit drive`` calls `drive` too.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from labkit.bench.load import run_load
from labkit.bench.results import LoadResult

ENTRY_POINT = "labkit.bench.drive"
"""The module `drive_elsewhere` runs: ``python -m labkit.bench.drive`` (`main`)."""


@dataclass(frozen=True)
class DriveOptions:
    """What to load: a server's base URL, a setup (or ``health``, or a path), how hard."""

    url: str
    setup: str = "async"
    requests: int = 300
    concurrency: int = 10


async def drive(options: DriveOptions) -> LoadResult:
    """`run_load` against the server at `options.url`, over a socket, after a short warm-up
    (one request per client, at most 10)."""
    limits = httpx.Limits(max_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=options.url, limits=limits, timeout=60) as client:
        return await run_load(
            client,
            options.setup,
            requests=options.requests,
            concurrency=options.concurrency,
            warmup=min(options.concurrency, 10),
        )


def drive_elsewhere(
    base_url: str, setup: str, *, requests: int, concurrency: int
) -> dict[str, Any]:
    """`drive` `base_url` from another process; the result's row (`LoadResult.row`)."""
    options = DriveOptions(base_url, setup, requests, concurrency)
    done = subprocess.run(
        [sys.executable, "-m", ENTRY_POINT],
        input=json.dumps(asdict(options)),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    row: dict[str, Any] = json.loads(done.stdout)
    return row


def main() -> None:
    """``python -m labkit.bench.drive``: `drive` with the `DriveOptions` JSON on stdin."""
    options = DriveOptions(**json.loads(sys.stdin.read()))
    print(json.dumps(asyncio.run(drive(options)).row()))


if __name__ == "__main__":
    main()
