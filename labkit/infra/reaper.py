"""Cleaning up after a process however it ends: killed kernels run no exit handlers.

A notebook's kernel is often killed rather than asked to exit (nbval kills its kernels; so does
Jupyter's "kill"), and a killed process runs no ``atexit`` handler. What the lab leaves outside
the process (a database on a server, a throwaway server, a PgBouncer) would then outlive it.

`when_this_process_ends` starts a small process of its own (`PROGRAM`), in a session of its own
(a kernel is killed with its process group), that waits on a pipe only this process holds open.
When this process ends, however it ends, the pipe closes and that process calls the job's
function. What the job needs (a server's URL, which may hold a password) goes through the
pipe, not the command line, where ``ps`` would show it. `cancel` ends the wait without the job,
for what was cleaned up in the ordinary way.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PROGRAM = (
    "import sys; job = sys.stdin.readline(); sys.stdin.read(); "
    f"from {__name__} import run; run(job)"
)
"""Read the job, wait for the end of stdin (when the process that started it has ended), and
only then import labkit, so that waiting costs a running kernel no CPU."""

_waiting: dict[str, subprocess.Popen[bytes]] = {}


def when_this_process_ends(key: str, function: Callable[..., object], **arguments: Any) -> None:
    """Call ``function(**arguments)`` (a module-level function; JSON arguments) in another
    process once this one has ended. Once per `key`, however often a notebook runs."""
    if key in _waiting:
        return
    waiter = subprocess.Popen(
        [sys.executable, "-c", PROGRAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert waiter.stdin is not None
    job = {"module": function.__module__, "name": function.__qualname__, "arguments": arguments}
    waiter.stdin.write(json.dumps(job).encode() + b"\n")
    waiter.stdin.flush()
    _waiting[key] = waiter  # holds the pipe open for as long as this process lives


def terminate(pid: int) -> None:
    """Ask process `pid` to stop (SIGTERM, as ``kill`` does); nothing if it has already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def cancel(key: str) -> None:
    """Stop waiting for `key`'s job without running it (it was done already)."""
    waiter = _waiting.pop(key, None)
    if waiter is not None:
        waiter.kill()
        waiter.wait()
        if waiter.stdin is not None:
            waiter.stdin.close()


def run(job: str) -> None:
    """Call the function a job names (a line of JSON: module, name, arguments)."""
    given = json.loads(job)
    function = getattr(importlib.import_module(given["module"]), given["name"])
    function(**given["arguments"])
