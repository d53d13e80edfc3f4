"""The three session setups, described once: their URL prefix, what limits them, how they are drawn.

Everything that differs between the setups (the model's ``C_eff``, the plots' colours, markers
and line styles, the routes a load is sent to) reads it from here, instead of switching on their
names.

Each setup is drawn in a colour of the Okabe-Ito palette (labkit.palette: vermillion, blue,
orange), and also with its own marker and line style, so that the setups differ in a figure
printed in grey or read without colour at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from labkit.palette import BLUE, ORANGE, VERMILLION


class Holds(Enum):
    """What a request of a setup holds while it waits on the database."""

    EVENT_LOOP = "the event loop"
    THREAD_AND_CONNECTION = "a worker thread and a connection"
    CONNECTION = "a connection"


@dataclass(frozen=True)
class Setup:
    """One way of wiring a session into a route."""

    name: str
    """Also its URL prefix: ``/NAME/users/{id}``."""
    route: str
    session: str
    holds: Holds
    colour: str
    marker: str
    """A matplotlib marker: a square, a circle or a triangle."""
    line: str
    """A matplotlib line style: dotted, solid or dashed."""

    @property
    def prefix(self) -> str:
        return f"/{self.name}"

    @property
    def uses_async_session(self) -> bool:
        """True where the routes take an `AsyncSession` (`get_async_db`), not a `Session`."""
        return self.session == "AsyncSession"

    def effective_concurrency(self, clients: int, *, threads: int, pool: int) -> int:
        """``C_eff``: how many of `clients` requests can wait on the database at the same time."""
        if self.holds is Holds.EVENT_LOOP:
            return 1
        if self.holds is Holds.THREAD_AND_CONNECTION:
            return min(clients, threads, pool)
        return min(clients, pool)

    def cap(self, *, threads: int, pool: int) -> int:
        """``C_eff`` with unlimited clients: the most requests that can wait at once."""
        return self.effective_concurrency(threads + pool, threads=threads, pool=pool)


BLOCKING = Setup("blocking", "async def", "sync Session", Holds.EVENT_LOOP, VERMILLION, "s", ":")
THREADPOOL = Setup("threadpool", "def", "sync Session", Holds.THREAD_AND_CONNECTION, BLUE, "o", "-")
ASYNC = Setup("async", "async def", "AsyncSession", Holds.CONNECTION, ORANGE, "^", "--")

SETUP_LIST = (BLOCKING, THREADPOOL, ASYNC)
SETUPS = tuple(setup.name for setup in SETUP_LIST)
"""The setups' names, which are also their URL prefixes."""


def setup_named(name: str) -> Setup:
    for setup in SETUP_LIST:
        if setup.name == name:
            return setup
    raise ValueError(f"no setup {name!r}: choose from {', '.join(SETUPS)}")
