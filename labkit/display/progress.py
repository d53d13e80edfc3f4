"""A progress bar for a run of many requests: in a notebook cell, or on a terminal's stderr.

Plain text, redrawn at most ten times a second, so it costs the measured loop next to nothing.
In a notebook it updates one display in place (no widgets needed); on a terminal it rewrites
one line of stderr; anywhere else (a pipe, a CI log) it stays silent.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from ..experiments.load import Progress

WIDTH = 30
REDRAW_S = 0.1


class _Bar:
    """The counting and throttling both displays share; subclasses only `_draw`."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.label = ""
        self._started = 0.0
        self._drawn = 0.0

    def start(self, total: int) -> None:
        self.total, self.done, self._started = total, 0, time.perf_counter()
        self._draw(self.line())

    def describe(self, label: str) -> None:
        self.label = label

    def advance(self, done: int = 1) -> None:
        self.done += done
        now = time.perf_counter()
        if now - self._drawn >= REDRAW_S:
            self._drawn = now
            self._draw(self.line())

    def close(self) -> None:
        self.label = "done"
        self._draw(self.line())

    def line(self) -> str:
        share = self.done / self.total if self.total else 1.0
        filled = round(WIDTH * min(share, 1.0))
        elapsed = time.perf_counter() - self._started
        return (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} requests "
            f"{elapsed:5.1f} s  {self.label}"
        )

    def _draw(self, line: str) -> None:
        raise NotImplementedError


class TerminalProgress(_Bar):
    """One line of `stream` (stderr), rewritten in place; a newline when the run ends."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line.ljust(100)[:100])
        self.stream.flush()

    def close(self) -> None:
        super().close()
        self.stream.write("\n")
        self.stream.flush()


class NotebookProgress(_Bar):
    """One display in the running cell, updated in place (``IPython.display`` handle)."""

    def __init__(self) -> None:
        super().__init__()
        self._handle: Any = None

    def _draw(self, line: str) -> None:
        from IPython.display import display

        text = {"text/plain": line}
        if self._handle is None:
            self._handle = display(text, raw=True, display_id=True)
        else:
            self._handle.update(text, raw=True)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not in a plain IPython terminal or a script)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and hasattr(ipython, "kernel")


def auto_progress() -> Progress | None:
    """A notebook display in a kernel, a terminal line on a tty, else nothing."""
    if in_notebook():
        return NotebookProgress()
    if sys.stderr.isatty():
        return TerminalProgress()
    return None
