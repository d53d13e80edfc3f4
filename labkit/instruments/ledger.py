"""The session ledger: how the lab shows one session per request, and proves that none leaks.

A session factory made with ``class_=LedgerSession, info={"ledger": ledger}`` makes sessions
that count themselves in `ledger` when they open and close, and log both (logger
``labkit.sessions``, level INFO). Each setup has a ledger of its own, numbering from 1, so the
ledger's label names the setup in the log ("sync session 1 opened", "async session 1 opened"):
without it, a log of both setups would show two different "session 1". The shop app's code is
unchanged: the lab swaps its factory in through ``app.dependency_overrides`` (see
labkit.app).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

log = logging.getLogger("labkit.sessions")


@dataclass
class SessionLedger:
    """Counts the sessions a factory opened and closed; `open` is what would be a leak."""

    label: str = ""
    """Which setup's sessions these are ("sync", "async"): the first word of each log line."""
    opened: int = 0
    closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def record_open(self) -> int:
        """Count a new session; its number is its place in this ledger (1, 2, ...)."""
        with self._lock:  # sessions open and close on threadpool threads too
            self.opened += 1
            return self.opened

    def record_close(self) -> None:
        with self._lock:
            self.closed += 1


class LedgerSession(Session):
    """A plain `Session` that logs when it opens and closes, and counts itself in a ledger.

    Closing twice counts once: `close()` may be called again by a context manager after a route
    already closed the session.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.number = self._ledger().record_open()
        self._counted_open = True
        if log.isEnabledFor(logging.INFO):  # the name is made only for a log that shows it
            log.info("%s opened", self.name)

    @property
    def name(self) -> str:
        """How the log and the lab's pictures call this session: "sync session 1"."""
        return f"{self._ledger().label} session {self.number}".lstrip()

    def _ledger(self) -> SessionLedger:
        ledger: SessionLedger = self.info["ledger"]  # set by the lab's sessionmaker
        return ledger

    def close(self) -> None:
        super().close()
        if self._counted_open:
            self._counted_open = False
            self._ledger().record_close()
            if log.isEnabledFor(logging.INFO):
                log.info("%s closed", self.name)
