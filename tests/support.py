"""What labkit's tests share, beside conftest's fixtures (which are built on it): a database of a
test's own on either backend; the lab's PostgreSQL server in a run on PostgreSQL, or a skip (a
failure under LAB_REQUIRE_POSTGRES where that run finds no server); what an app or a database
still holds after its requests; a `jupyter lab` of a test's own; and the type check run in the
background. Built on `labkit.infra.postgres`, as the notebooks are.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import websocket
from sqlalchemy.engine import URL

from labkit.app.create import LabApp
from labkit.app.databases import AsyncDatabase, SyncDatabase
from labkit.infra.notebook_database import BACKENDS, selected_backend
from labkit.infra.ports import LOOPBACK, free_port
from labkit.infra.postgres import (
    NoPostgres,
    PostgresServer,
    find_server,
    run_admin,
    throwaway_database,
)
from labkit.instruments.watch import queue_pool
from labkit.settings import REQUIRE_POSTGRES, lab_settings, sqlite_url

every_backend = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
"""Run a test (or a module, as ``pytestmark``) once per backend: for promises the two keep
differently (PostgreSQL cannot store NUL, for one). The SQLite case runs in every run; the
PostgreSQL case where a server is the run's database (`postgres_or_skip`)."""


def refuses_connections(port: int) -> bool:
    """Nothing accepts a TCP connection on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def cannot_run(reason: str) -> NoReturn:
    """Skip the test with `reason`; under LAB_REQUIRE_POSTGRES, fail it with `reason` instead."""
    if lab_settings().require_postgres:
        pytest.fail(f"{REQUIRE_POSTGRES} is set but {reason}", pytrace=False)
    pytest.skip(reason)


IN_THE_POSTGRES_RUN = (
    "a PostgreSQL case: it runs when DATABASE_URL names a PostgreSQL server "
    "(CI's second run of the suite), not in the run on SQLite"
)


def postgres_or_skip() -> PostgresServer:
    """The lab's PostgreSQL server, in a run on PostgreSQL (`DATABASE_URL`); if there is none,
    skip (fail, under LAB_REQUIRE_POSTGRES).

    In a run on SQLite the test is skipped, server or not: CI runs the suite again on
    PostgreSQL, and the case ran twice, for nothing, when both runs took it."""
    if selected_backend() != "postgresql":
        pytest.skip(IN_THE_POSTGRES_RUN)
    try:
        return find_server()
    except NoPostgres as exc:
        reason = str(exc)
    cannot_run(reason)


def admin(sql: str) -> None:
    """Run one statement on the lab's server as its admin, outside a transaction."""
    run_admin(postgres_or_skip(), sql)


@contextmanager
def database_of_own(backend: str, folder: Path) -> Iterator[URL]:
    """A fresh SQLite file in `folder`, or a new, empty PostgreSQL database ``lab_test_<random>``
    that is dropped (with its connections) on exit."""
    if backend == "sqlite":
        yield sqlite_url(folder / "lab.db")
    elif backend == "postgresql":
        with throwaway_database(postgres_or_skip(), prefix="lab_test") as url:
            yield url
    else:
        raise ValueError(f"no backend {backend!r}: one of {BACKENDS}")


Holder = LabApp | SyncDatabase | AsyncDatabase


def held(*holders: Holder) -> dict[str, int]:
    """Sessions still open (the session ledger) and connections still checked out of the pool,
    for each database: all zero when nothing is held. An app stands for both its databases."""
    databases: list[SyncDatabase | AsyncDatabase] = []
    for holder in holders:
        if isinstance(holder, LabApp):
            databases += [holder.sync_db, holder.async_db]
        else:
            databases.append(holder)
    counts: dict[str, int] = {}
    seen: Counter[str] = Counter()
    for database in databases:
        kind = "async" if isinstance(database, AsyncDatabase) else "sync"
        seen[kind] += 1
        name = kind if seen[kind] == 1 else f"{kind} #{seen[kind]}"
        counts[f"{name} sessions"] = database.ledger.open
        counts[f"{name} connections"] = queue_pool(database.engine.pool).checkedout()
    return counts


def assert_nothing_held(*holders: Holder) -> None:
    """Every session closed and every pooled connection back, in each database of `holders`."""
    found = held(*holders)
    assert found == dict.fromkeys(found, 0), found


@dataclass(frozen=True)
class JupyterLab:
    """A running `jupyter lab`: where it answers, the token it asks for, and its log."""

    base_url: str
    token: str
    log: Path

    def url(self, path: str) -> str:
        """`path` (``/lab``, ``/api/...``, with or without a query) with the token, logged in."""
        separator = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{separator}token={self.token}"

    def get_json(self, path: str) -> object:
        return self.get(path).raise_for_status().json()

    def get(self, path: str) -> httpx.Response:
        """GET `path` on the server, logged in with the token (a header: the query stays free)."""
        return httpx.get(self.base_url + path, headers=self.login, timeout=10)

    @property
    def login(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @contextmanager
    def kernel(self) -> Iterator[Callable[[str], str]]:
        """A kernel this server starts, as it starts a notebook's; yields a function that runs
        code in it and returns what it printed (an error in the code fails the test). The
        kernel is shut down on exit."""
        started = httpx.post(f"{self.base_url}/api/kernels", headers=self.login, timeout=60)
        kernel = started.raise_for_status().json()["id"]
        channels = self.base_url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
        connection = websocket.create_connection(channels, header=self.login, timeout=120)
        try:
            yield lambda code: _run(connection, code)
        finally:
            connection.close()
            httpx.delete(f"{self.base_url}/api/kernels/{kernel}", headers=self.login, timeout=30)

    def answers(self) -> bool:
        """Its API answers (it is ready)."""
        try:
            self.get_json("/api/status")
        except httpx.HTTPError:
            return False
        return True


@contextmanager
def jupyter_lab(root: Path, state: Path, *, timeout_s: float = 60) -> Iterator[JupyterLab]:
    """`jupyter lab` serving `root` on loopback with a token, as a reader starts it, once it
    answers ``/api/status``; stopped (its kernels with it) and waited for on exit.

    Its log, runtime files, settings and workspaces go to `state`, so your own JupyterLab
    settings change nothing here and nothing here is left in theirs. Any failure, in the server
    or in the ``with`` block, names the log.
    """
    state.mkdir(parents=True, exist_ok=True)
    _no_news(state / "settings")
    log = state / "jupyter-lab.log"
    port = free_port()
    lab = JupyterLab(f"http://{LOOPBACK}:{port}", secrets.token_hex(16), log)
    folders = {
        "JUPYTER_RUNTIME_DIR": state / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": state / "settings",
        "JUPYTERLAB_WORKSPACES_DIR": state / "workspaces",
    }
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                f"--ip={LOOPBACK}",
                f"--port={port}",
                f"--IdentityProvider.token={lab.token}",
                "--ServerApp.allow_root=True",
                f"--ServerApp.root_dir={root}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **{name: str(folder) for name, folder in folders.items()}},
        )
    try:
        _wait_until_answers(lab, server, timeout_s)
        yield lab
    except (Exception, pytest.fail.Exception) as exc:
        exc.add_note(f"jupyter lab's log: {log}")
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _run(connection: websocket.WebSocket, code: str) -> str:
    """Run `code` in the kernel behind `connection` (Jupyter's messaging, as JSON); what it
    printed."""
    message_id = secrets.token_hex(8)
    header = {"msg_id": message_id, "msg_type": "execute_request", "version": "5.3"}
    header |= {"session": "tests", "username": "tests"}
    content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
    request = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    connection.send(json.dumps({**request, "channel": "shell", "buffers": []}))
    printed: list[str] = []
    while True:
        message = json.loads(connection.recv())
        if message.get("parent_header", {}).get("msg_id") != message_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind == "error":
            pytest.fail("the kernel raised:\n" + "\n".join(content["traceback"]), pytrace=False)
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(printed)


def _no_news(settings: Path) -> None:
    """Answer JupyterLab's question about Jupyter news beforehand, no: asked, it is a toast over
    the page, and yes would fetch the news from the internet."""
    notifications = settings / "@jupyterlab" / "apputils-extension"
    notifications.mkdir(parents=True, exist_ok=True)
    answer = {"fetchNews": "false", "checkForUpdates": False}
    (notifications / "notification.jupyterlab-settings").write_text(json.dumps(answer))


def _wait_until_answers(lab: JupyterLab, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not lab.answers():
        if server.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {server.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"jupyter lab did not answer within {timeout_s:.0f} s")
        time.sleep(0.25)


@dataclass
class TypeCheck:
    """``python -m mypy`` on labkit (strict, as pyproject.toml sets it up) in another process."""

    process: subprocess.Popen[str]

    @classmethod
    def start(cls, config: pytest.Config) -> TypeCheck:
        """Start mypy at the lower priority ``nice`` gives, so it takes a core the tests leave
        idle and not the timing tests' own; stopped when the run ends, if still running.

        Its output waits in a pipe: mypy would pause only past the pipe's 64 KiB, hundreds of
        errors, until `result` reads them."""
        process = subprocess.Popen(
            [sys.executable, "-m", "mypy"],
            cwd=config.rootpath,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: os.nice(10),
        )
        check = cls(process)
        config.add_cleanup(check.stop)
        return check

    @staticmethod
    def cached(config: pytest.Config) -> bool:
        """Whether mypy has its cache (.mypy_cache) here: with it, a run checks again only what
        changed and takes about a second; without, about 15 s of CPU."""
        return (config.rootpath / ".mypy_cache").is_dir()

    def result(self, timeout_s: float) -> tuple[int, str]:
        """Wait for mypy: its exit code (0: no errors) and what it printed."""
        output, _ = self.process.communicate(timeout=timeout_s)
        return self.process.returncode, output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
