"""``python -m labkit serve --workers N``: N processes answer, each says which it is (the
``X-Lab-Worker`` header, and ``application_name`` on PostgreSQL), and none outlives the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from sqlalchemy.engine import URL

from labkit.__main__ import main
from labkit.app.serve import WORKER_HEADER, uvicorn_process, worker_name
from labkit.bench.setups import SETUPS
from labkit.bench.socket_load import SocketLoad
from labkit.infra.postgres import libpq_url
from labkit.infra.uvicorn import Server
from labkit.lessons.workers.throughput import CpuUse, WorkersBound, WorkersPoint, cpu_used
from labkit.settings import sqlite_url

PREFIX = "lab worker "


def worker_pids(server: Server, paths: list[str], *, rounds: int = 5) -> set[int]:
    """The pids in the ``X-Lab-Worker`` header of batches of 40 concurrent GETs of `paths`, each on
    a connection of its own; further batches (at most `rounds`) until two workers have answered.

    The kernel hands each new connection to whichever worker accepts first, and a worker that is
    still starting accepts none, so one batch may see a single worker.
    """
    seen: set[int] = set()
    fresh = httpx.Limits(max_connections=40, max_keepalive_connections=0)  # none is reused

    def get(path: str) -> str:
        response = client.get(path)
        assert response.status_code == 200, response.text
        name = response.headers[WORKER_HEADER]
        assert name.startswith(PREFIX), name
        return name

    with (
        httpx.Client(base_url=server.url, limits=fresh, timeout=30) as client,
        ThreadPoolExecutor(max_workers=40) as pool,
    ):
        for _ in range(rounds):
            batch = [paths[i % len(paths)] for i in range(40)]
            seen |= {int(name.removeprefix(PREFIX)) for name in pool.map(get, batch)}
            if len(seen) >= 2:
                break
    return seen


def gone(pid: int) -> bool:
    """The process has exited (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pids: set[int], timeout_s: float = 10.0) -> set[int]:
    """Poll until every pid in `pids` is gone, or the time is up; those still running."""
    deadline = time.monotonic() + timeout_s
    while (running := {pid for pid in pids if not gone(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


@pytest.mark.slow
def test_two_workers_both_answer_and_none_outlives_the_server(tmp_path: Path) -> None:
    """``--workers 2`` runs two processes under the server that both answer requests; after the
    block every process the server started (workers, resource tracker) has exited."""
    with uvicorn_process(sqlite_url(tmp_path / "lab.db"), workers=2) as server:
        pids = worker_pids(server, ["/async/users/1"])
        started = {process.pid for process in server.processes()}
        assert len(pids) == 2, pids
        assert pids <= started - {server.pid}  # workers, not the supervisor
        assert len(started) >= 3  # the supervisor, its two workers (and a resource tracker)
    assert wait_until_gone(started) == set()


@pytest.mark.slow
def test_each_worker_names_its_postgres_connections_after_its_pid(postgres_url: URL) -> None:
    """On PostgreSQL, every connection the workers open shows ``application_name`` "lab worker
    PID" in ``pg_stat_activity``, one name per worker that answered, on every driver."""
    with uvicorn_process(postgres_url, workers=2) as server:
        paths = [f"/{setup}/users/1" for setup in SETUPS]  # psycopg and asyncpg alike
        pids = worker_pids(server, paths)
        assert len(pids) == 2, pids
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY application_name",
                (postgres_url.database,),
            ).fetchall()
    names = {name for name, _count in rows}
    assert names == {worker_name(pid) for pid in pids}, rows


def test_serve_refuses_zero_workers(capsys: pytest.CaptureFixture[str]) -> None:
    """``serve --workers 0`` is an argument error (exit 2), not a server with no process."""
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--workers", "0"])
    assert stopped.value.code == 2
    assert "not a whole number of at least 1: '0'" in capsys.readouterr().err


def point(workers: int, latency_ms: float, ok: int, server_s: float) -> WorkersPoint:
    """A run that answered `ok` requests for `server_s` of the server's CPU."""
    load = SocketLoad(concurrency=32, elapsed_s=1.0, statuses=Counter({200: ok}))
    return WorkersPoint(workers, latency_ms, load, CpuUse(server_s, server_s, 1.0))


def test_the_workers_bound_takes_the_cheapest_run_at_zero_latency() -> None:
    runs = [point(1, 0, 364, 0.99), point(1, 10, 130, 0.43), point(2, 0, 1028, 1.70)]
    model = WorkersBound.calibrated(runs, pool=2)
    assert model.s == pytest.approx(1.70 / 1028)  # two workers spent less per request than one
    assert model.throughput([18, 14], 0) == pytest.approx(min(2, model.cores) / model.s)
    with pytest.raises(ValueError, match="a run at L = 0"):
        WorkersBound.calibrated(runs[1:2], pool=2)


BUSY = """
import sys, time
end = time.process_time() + 0.25
while time.process_time() < end:
    pass
print("done", flush=True)
sys.stdin.read()  # stays alive, so that its CPU and wait can still be read
"""


@pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="Linux's schedstat only")
def test_two_processes_on_one_core_wait_for_it_and_the_wait_is_not_cpu() -> None:
    """Two processes that each want 0.25 s of CPU, kept to one core: together they get at most
    that core, and each waits for it while the other runs; `cpu_used` counts the wait apart."""
    core = min(os.sched_getaffinity(0))
    busy = [
        subprocess.Popen(
            [sys.executable, "-c", BUSY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )
        for _ in range(2)
    ]
    try:
        with cpu_used([psutil.Process(process.pid) for process in busy]) as found:
            for process in busy:
                assert process.stdout is not None
                assert process.stdout.readline() == "done\n"
    finally:
        for process in busy:
            process.kill()
            process.wait()
    (used,) = found
    assert used.server_wait_s is not None
    assert used.server_s <= used.wall_s * 1.05  # one core: never more CPU than time passed
    assert used.server_wait_s >= 0.15  # each waited while the other ran
