"""A lean load driver for a server in another process: keep-alive GETs over raw sockets.

`run_load` drives through httpx, which costs about as much CPU per request as the app it loads.
Where the server, its database and the driver share a machine's cores (as on a laptop, or a
2-core CI machine), that CPU is taken from the server, and a second worker process has little
left to run on. A real server's clients are on other machines. This driver speaks only what a
keep-alive ``GET`` needs (the status line, ``Content-Length``), so it costs a small fraction of
that, and the server's processes get the cores.

C clients each hold one connection and send their next request as soon as the last one is
answered, until `requests` have been sent, as in `run_load`: a closed system of C clients.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from labkit.app.serve import WORKER_HEADER
from labkit.bench.load import route_for
from labkit.bench.results import Answers, succeeded

WORKER_HEADER_LINE = f"\r\n{WORKER_HEADER}: ".encode()


@dataclass
class SocketLoad(Answers):
    """What one run of `socket_load` saw: statuses, response times, which worker answered."""

    concurrency: int
    elapsed_s: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    answered_by: Counter[str] = field(default_factory=Counter)
    """Requests answered, by the worker that answered them (its ``X-Lab-Worker`` header)."""
    connections_by: Counter[str] = field(default_factory=Counter)
    """Clients' connections, by the worker that accepted them: a connection stays with it."""
    response_times_s: array[float] = field(default_factory=lambda: array("d"))
    first_body: dict[int, str] = field(default_factory=dict)
    """The first answer's body for each status: what a 503 said, say."""
    failures: Counter[str] = field(default_factory=Counter)
    """The bodies of the answers that failed (see `succeeded`), counted: how many 503s the server's
    refusal caused, and how many a wait for a pooled connection that ran out."""


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _client(
    connection: Connection, host: str, paths: Iterator[str], seen: SocketLoad
) -> None:
    reader, writer = connection
    worker = None
    try:
        for path in paths:
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                seen.errors[type(exc).__name__] += 1
                return  # the server closed the connection: this client is done
            lower = head.lower()
            start = lower.index(b"content-length:") + len(b"content-length:")
            body = await reader.readexactly(int(lower[start : lower.index(b"\r\n", start)]))
            seen.response_times_s.append(time.perf_counter() - started)
            status = int(head[9:12])
            seen.statuses[status] += 1
            text = body.decode(errors="replace")
            seen.first_body.setdefault(status, text)
            if not succeeded(status):
                seen.failures[text] += 1
            if (at := lower.find(WORKER_HEADER_LINE)) >= 0:
                name = head[at + len(WORKER_HEADER_LINE) : head.index(b"\r\n", at + 2)]
                if worker is None:
                    worker = name.decode()
                    seen.connections_by[worker] += 1
                seen.answered_by[worker] += 1
    finally:
        writer.close()


async def socket_load(
    base_url: str,
    setup: str,
    *,
    concurrency: int,
    requests: int | None = None,
    seconds: float | None = None,
) -> SocketLoad:
    """GETs of `setup`'s route (``/SETUP/users/{id}``, ``/health`` or a path) from `concurrency`
    clients, each on a keep-alive connection of its own: `requests` of them, or as many as are
    sent in `seconds` (a run of known length, whatever the server's speed).

    The clients start one after another, as users arrive. The kernel gives each connection to
    one worker, and not evenly (16 clients were seen split 14 and 2): `connections_by` says
    how they were split.
    """
    if (requests is None) == (seconds is None):
        raise ValueError("give either requests or seconds")
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    route = route_for(setup)
    seen = SocketLoad(concurrency, 0.0)
    started = time.perf_counter()
    if seconds is None:
        paths: Iterator[str] = (route(i) for i in range(requests or 0))
    else:
        deadline = started + seconds
        in_time = itertools.takewhile(lambda _: time.perf_counter() < deadline, itertools.count())
        paths = (route(i) for i in in_time)
    # `paths` is shared: each client takes the next one as soon as its last is answered
    clients = []
    for _ in range(concurrency):
        connection = await asyncio.open_connection(host, port)
        clients.append(asyncio.create_task(_client(connection, host, paths, seen)))
    await asyncio.gather(*clients)
    seen.elapsed_s = time.perf_counter() - started
    return seen
