"""SQLAlchemy event listeners for the length of a ``with`` block: how every instrument attaches.

A listener can be put on one engine (or an async engine's ``sync_engine``), on one pool, or on
the `Engine` or `Pool` class itself, which reaches every engine and pool in the process, those
someone else created included. Whatever the block does, the listeners are removed on the way
out, so one measurement leaves nothing behind for the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

Listener = tuple[Any, str, Callable[..., Any]]
"""Where to listen (an engine, a pool, or their class), the event's name, and the function."""


@contextmanager
def listening(listeners: Sequence[Listener]) -> Iterator[None]:
    """Add each listener for the block, in order; remove them all afterwards."""
    added: list[Listener] = []
    try:
        for target, name, function in listeners:
            event.listen(target, name, function)
            added.append((target, name, function))
        yield
    finally:
        for target, name, function in reversed(added):
            event.remove(target, name, function)
