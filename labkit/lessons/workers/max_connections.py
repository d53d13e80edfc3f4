"""A PostgreSQL server's connection slots, as an app meets them.

A server lets in ``max_connections`` clients, but not all of them alike: a superuser may take
the slots ``superuser_reserved_connections`` keeps back, and an app's own role may not
(`app_role`, `connections_until_refused`). A slot is held by a backend process, from soon after
it starts until it exits, which is a moment after its client has gone: `client_backends` counts
the processes, and `until_server_holds_only` waits until the server runs none but those an app
still holds open (`connections_held`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import psycopg
from sqlalchemy.engine import URL

from labkit.infra.postgres import PostgresServer, libpq_url


def app_role(server: PostgresServer, database: URL, role: str = "lab_app") -> URL:
    """`database` as a login role of the app's own, which owns it (created if need be).

    A superuser, such as ``postgres``, may use the connections PostgreSQL keeps back for
    administrators (``superuser_reserved_connections``, 3 by default); an app's role may not, so
    the server refuses it that many connections sooner. An app that logs in as itself meets
    the limit where it really is. Owning the database lets the role create the app's tables.
    The lab's servers trust loopback, so the role needs no password. `role` is the lab's own
    name, never user input.
    """
    with psycopg.connect(libpq_url(server.url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'ALTER DATABASE "{database.database}" OWNER TO "{role}"')
    return database.set(username=role)


@dataclass(frozen=True)
class Refusal:
    """How a server refused a connection, and how many it had let in before."""

    user: str
    opened: int
    """Connections the server accepted from `user` before it refused one."""
    message: str
    """The server's own words."""
    sqlstate: str
    """PostgreSQL's error code: 53300, "too many connections", for either refusal."""
    error: str
    """The driver's name for it (asyncpg's exception class), as the app's 503 names it."""


async def connections_until_refused(
    server: PostgresServer, database: URL, most: int = 1000
) -> Refusal:
    """Open connections to `database` (asyncpg, as the lab's async app does) until the server
    refuses one, then close them all.

    It starts once `server` holds no connection at all (`until_server_holds_only`): a backend
    still ending would hold a slot and make the count one short.
    """
    import asyncpg  # here: the lab's other uses of this module need no async driver

    until_server_holds_only(server)
    held: list[asyncpg.Connection] = []
    try:
        while len(held) < most:
            held.append(await asyncpg.connect(libpq_url(database)))
    except asyncpg.PostgresError as exc:
        return Refusal(
            database.username or "", len(held), str(exc), exc.sqlstate, type(exc).__name__
        )
    finally:
        for connection in held:
            await connection.close()
    raise RuntimeError(f"the server let {most} connections in, and refused none")


def client_backends(server: PostgresServer) -> int:
    """The processes `server` runs for client connections now: serving, starting, or ending.

    Counted from the operating system, not ``pg_stat_activity``: a backend holds one of
    ``max_connections``' slots from soon after it starts until its process exits, and
    ``pg_stat_activity`` never lists one the server refused for want of a slot, though it holds
    one while it exits. Only for a server the lab started on this machine (`throwaway_server`).
    """
    if server.pid is None:
        raise ValueError(f"{server} was not started by the lab: its processes are unknown")
    count = 0
    for child in psutil.Process(server.pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:  # exited: its slot is free
                continue
            # a backend's title: "postgres: USER DATABASE 127.0.0.1(PORT) STATE"
            if f"{server.url.host}(" in " ".join(child.cmdline()):
                count += 1
        except psutil.NoSuchProcess:
            continue
    return count


def connections_held(server: PostgresServer, processes: Sequence[psutil.Process]) -> int:
    """The TCP connections to `server` that `processes` hold open (an app's pools, say)."""
    held = 0
    for process in processes:
        try:
            sockets = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        held += sum(
            1
            for socket in sockets
            if socket.raddr
            and socket.raddr.port == server.url.port
            and socket.status == psutil.CONN_ESTABLISHED
        )
    return held


def until_server_holds_only(
    server: PostgresServer, processes: Sequence[psutil.Process] = (), timeout_s: float = 5.0
) -> int:
    """Wait until `server` runs a backend for no connection but those `processes` hold open
    (none, by default); the number of backends it runs then.

    A client that closes a connection is done with it at once; the server's backend takes a
    moment longer to end, and keeps its slot of ``max_connections`` until it has. So does a
    backend the server has just refused, while it exits (`client_backends` counts both).
    `TimeoutError` after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while (backends := client_backends(server)) > connections_held(server, processes):
        if time.monotonic() > deadline:
            held = connections_held(server, processes)
            raise TimeoutError(f"{server} still runs {backends} backends; {held} are held")
        time.sleep(0.005)
    return backends
