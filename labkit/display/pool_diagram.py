"""Engine → pool → connections → sessions, drawn from the live objects at one moment.

A reader is told that an engine owns a pool, that the pool lends connections, and that a
session holds one only from its first statement until it ends. The picture shows it for the
objects in front of them: `read_pool` reads an engine's pool and some sessions (what is checked
out, what is idle, which session holds which connection), and `plot_pool` draws that reading.
The two are apart so that a notebook can assert the reading the figure shows.

Everything is read through public API, and reading changes nothing: a session's connections come
from `SessionTransaction.connections` (SQLAlchemy 2.1.7), which never checks one out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from labkit.instruments.statements import pool_capacity
from labkit.palette import BLUE, ORANGE, SKY_BLUE

CHECKED_OUT = ORANGE
IDLE = SKY_BLUE
SESSION = BLUE
"""Orange, sky blue and blue: a checked-out connection stands out from an idle one
for every reader, colour blind or not, and each box also says what it is in words."""
FRAME = "dimgray"


@dataclass(frozen=True)
class SessionReading:
    """One session: its name, and which checked-out connection it holds (None: none yet)."""

    name: str
    connection: int | None


@dataclass(frozen=True)
class PoolReading:
    """An engine's pool and the sessions given, as they were at one moment."""

    database: str
    """The dialect and its driver, as ``sqlite (pysqlite)``."""
    pool_class: str
    pool_size: int | None
    """Connections the pool keeps open (`QueuePool.size()`); None for a pool without a queue."""
    max_overflow: int | None
    """Connections it may open beyond `pool_size`, closed again when returned."""
    checked_out: int
    idle: int
    """Connections open and waiting in the pool for the next checkout."""
    sessions: tuple[SessionReading, ...]


def _session_name(session: Session, place: int) -> str:
    name = getattr(session, "name", None)  # labkit's LedgerSession: "sync session 1"
    return name if isinstance(name, str) else f"session {place}"


def read_pool(
    engine: Engine | AsyncEngine, sessions: Sequence[Session | AsyncSession] = ()
) -> PoolReading:
    """Read `engine`'s pool, and which of its connections each of `sessions` holds, now."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    pool = sync_engine.pool
    dbapi_ids: list[int] = []  # the DBAPI connections the sessions hold, numbered in order
    readings = []
    for place, given in enumerate(sessions, 1):
        session = given.sync_session if isinstance(given, AsyncSession) else given
        transaction = session.get_transaction()
        held = [
            id(connection.connection.dbapi_connection)
            for connection in (transaction.connections if transaction is not None else ())
            if connection.engine is sync_engine and not connection.closed
        ]
        if held and held[0] not in dbapi_ids:
            dbapi_ids.append(held[0])
        index = dbapi_ids.index(held[0]) if held else None
        readings.append(SessionReading(_session_name(session, place), index))
    pool_size: int | None = None
    checked_out, idle = len(dbapi_ids), 0
    if isinstance(pool, QueuePool):  # the default pool, and the async engines' adapted one
        pool_size, checked_out, idle = pool.size(), pool.checkedout(), pool.checkedin()
    capacity = pool_capacity(pool)
    return PoolReading(
        database=f"{sync_engine.dialect.name} ({sync_engine.dialect.driver})",
        pool_class=type(pool).__name__,
        pool_size=pool_size,
        max_overflow=None if capacity is None or pool_size is None else capacity - pool_size,
        checked_out=checked_out,
        idle=idle,
        sessions=tuple(readings),
    )


BOX_WIDTH, BOX_HEIGHT = 0.72, 0.62  # in data units: one column is 1 wide, one row 1 high


def _box(ax: Axes, x: float, y: float, text: str, colour: str, *, dashed: bool = False) -> None:
    """A rounded box centred on (x, y): filled when the thing exists, dashed when it could."""
    ax.add_patch(
        FancyBboxPatch(
            (x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2),
            BOX_WIDTH,
            BOX_HEIGHT,
            boxstyle="round,pad=0,rounding_size=0.08",
            facecolor="white" if dashed else to_rgba(colour, 0.25),
            edgecolor=colour if dashed else FRAME,
            linestyle="--" if dashed else "-",
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    """From the right edge of the box at `start` to the left edge of the box at `end`."""
    ax.annotate(
        "",
        xy=(end[0] - BOX_WIDTH / 2, end[1]),
        xytext=(start[0] + BOX_WIDTH / 2, start[1]),
        arrowprops={"arrowstyle": "->", "color": FRAME, "shrinkA": 0, "shrinkB": 2},
    )


def _capacity(reading: PoolReading) -> str:
    if reading.pool_size is None:
        return "no size limit"
    if reading.max_overflow is None:
        return f"size {reading.pool_size}, overflow unlimited"
    return f"size {reading.pool_size} + overflow {reading.max_overflow}"


def plot_pool(reading: PoolReading, title: str) -> Figure:
    """Draw `reading`: the engine, its pool, each open connection, and the sessions.

    Checked-out connections are orange, idle ones green, sessions blue; dashed are the
    connections the pool may still open and the sessions that hold no connection.
    """
    columns = {"engine": 0.0, "pool": 1.0, "connections": 2.0, "sessions": 3.0}
    connections: list[tuple[str, str, bool]] = []  # text, colour, dashed
    for number in range(1, reading.checked_out + 1):
        connections.append((f"connection {number}\nchecked out", CHECKED_OUT, False))
    connections += [("connection\nidle in the pool", IDLE, False)] * reading.idle
    if reading.pool_size is not None and reading.max_overflow is not None:
        unopened = reading.pool_size + reading.max_overflow - reading.checked_out - reading.idle
        if unopened > 0:
            connections.append((f"{unopened} more the\npool may open", FRAME, True))
    without = [s for s in reading.sessions if s.connection is None]
    rows = max(len(connections), len(reading.sessions), 1)
    fig, ax = plt.subplots(figsize=(9, 0.85 * rows + 1.2), layout="constrained")
    ax.set_xlim(-0.5, 3.5)
    ax.set_ylim(rows - 0.5, -1.0)
    ax.axis("off")
    middle = (rows - 1) / 2
    _box(ax, columns["engine"], middle, f"Engine\n{reading.database}", FRAME)
    pool_text = f"{reading.pool_class}\n{_capacity(reading)}\n"
    pool_text += f"{reading.checked_out} checked out, {reading.idle} idle"
    _box(ax, columns["pool"], middle, pool_text, FRAME)
    _arrow(ax, (columns["engine"], middle), (columns["pool"], middle))
    for row, (text, colour, dashed) in enumerate(connections):
        _box(ax, columns["connections"], row, text, colour, dashed=dashed)
        if not dashed:
            _arrow(ax, (columns["pool"], middle), (columns["connections"], row))
    for session in reading.sessions:
        if (held := session.connection) is not None:
            text = f"{session.name}\nholds connection {held + 1}"
            _box(ax, columns["sessions"], held, text, SESSION)
            _arrow(ax, (columns["connections"], held), (columns["sessions"], held))
    for row, session in enumerate(without, rows - len(without)):
        _box(
            ax, columns["sessions"], row, f"{session.name}\nno connection yet", SESSION, dashed=True
        )
    for name, x in columns.items():
        ax.text(x, -0.8, name, ha="center", fontsize=10, fontweight="bold", color=FRAME)
    ax.set_title(title)
    return fig
