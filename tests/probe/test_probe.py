"""``python -m labkit probe``: the instruments on apps that know nothing of labkit (probe_apps/).

Timing claims are ratios within one run (C=10 against C=1 of the same path), with wide margins:
the machine is shared, and a route that takes turns stays flat however busy it is.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import Pool, QueuePool

from labkit.__main__ import main
from labkit.bench.results import LoadResult
from labkit.instruments.latency import latency_everywhere
from labkit.instruments.statements import StatementThreads, watch_statement_threads
from labkit.instruments.watch import EngineCounts, LagTrace, watch_engine
from labkit.probe.app_import import ProbeError, import_app
from labkit.probe.points import ProbePoint, diagnose, limit_of, stall
from labkit.probe.sweep import probe
from labkit.probe.verdicts import verdict
from labkit.settings import async_url, database_url

TESTS = Path(__file__).resolve().parents[1]
KINDS = {"tutorial": False, "blocking": True, "async": False}  # prefix: holds the event loop?
PATHS = [f"/{prefix}/heroes/{{id}}" for prefix in KINDS]


def _listeners() -> tuple[int, ...]:
    """Class-level listeners as a fresh engine and pool see them: the probe must leave none."""
    engine = create_engine("sqlite://")
    found = (
        len(engine.dispatch.before_cursor_execute),
        len(engine.dispatch.after_cursor_execute),
        *(len(getattr(engine.pool.dispatch, name)) for name in ("connect", "checkout", "checkin")),
    )
    engine.dispose()
    return found


def test_probe_flags_only_the_sync_session_in_async_def_and_leaves_no_listeners(capsys) -> None:
    before = _listeners()
    code = main(
        ["probe", "tests.probe_apps.all_three:app", "--latency", "50", "--concurrency", "1,10",
         "--requests", "5", "--ids", "3", "--csv", "-", *(f"--path={p}" for p in PATHS)]
    )  # fmt: skip
    assert code == 0
    assert _listeners() == before
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [(row["path"], row["C"]) for row in rows] == [(p, c) for p in PATHS for c in ("1", "10")]
    assert [row["ok"] for row in rows] == ["5", "30"] * 3  # at least 3 per client
    rps = {(row["path"], int(row["C"])): float(row["rps"]) for row in rows}
    for prefix, holds in KINDS.items():
        path = f"/{prefix}/heroes/{{id}}"
        assert {row["loop_held"] for row in rows if row["path"] == path} == {str(holds)}, path
        growth = rps[path, 10] / rps[path, 1]
        assert growth < 1.5 if holds else growth >= 4, (path, growth)
    verdicts = captured.err.split("\n\n")[1:]  # the table, then one paragraph per path
    assert [v.split(":")[0] for v in verdicts] == PATHS
    assert ["held back by the event loop" in v for v in verdicts] == list(KINDS.values())
    assert "make the route `def`" in verdicts[1].replace("\n  ", " ").lower()


@pytest.mark.anyio
async def test_a_route_that_holds_the_loop_is_not_run_where_it_would_stall_in_the_pool() -> None:
    app = import_app("tests.probe_apps.blocking:app")
    report = await probe(app, ["/heroes/{id}"], [16, 1], latency_ms=5, requests=5, warmup=1)
    assert [point.concurrency for point in report.points] == [1]  # sorted, then 16 skipped
    (why,) = report.skipped["/heroes/{id}"]
    assert "C=16 not run" in why and "pool's 15 connections" in why and "(30 s)" in why
    assert "--force runs it" in why
    assert "C=16 not run" in report.verdicts()[0]


@pytest.mark.slow  # the command, in a process of its own
def test_the_command_imports_the_app_from_the_current_folder_as_uvicorn_does(
    probe_apps_dir: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "labkit", "probe", "probe_apps.blocking:app", "--path",
         "/heroes/{id}", "--latency", "20", "--concurrency", "1,4", "--requests", "8"],
        cwd=TESTS, env={**os.environ, "PROBE_APPS_DIR": str(probe_apps_dir)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:4] == ["path", "C", "ok", "failed"]
    assert [line.split()[1] for line in lines[2:4]] == ["1", "4"]
    assert all(" True " in line for line in lines[2:4])
    assert "held back by the event loop" in done.stdout


def test_import_app_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="module:attribute"):
        import_app("no_colon")
    with pytest.raises(ProbeError, match="no module 'labkit_no_such_app'"):
        import_app("labkit_no_such_app:app")
    with pytest.raises(ProbeError, match="no attribute 'nope'"):
        import_app("tests.probe_apps.tutorial:nope")
    with pytest.raises(ProbeError, match=r"not an ASGI app \(type Engine\)"):
        import_app("tests.probe_apps.tutorial:engine")
    with pytest.raises(
        ProbeError, match="function of no arguments: if it builds the app, --factory"
    ):
        import_app("tests.probe_apps.shipped:create_app")
    with pytest.raises(ProbeError, match=r"--factory: .*read_hero\(\) failed: .*missing"):
        import_app("tests.probe_apps.tutorial:read_hero", factory=True)
    (tmp_path / "labkit_probe_elsewhere.py").write_text(
        "from fastapi import FastAPI\n\nclass Holder:\n    app = FastAPI()\n"
    )
    try:
        assert import_app("labkit_probe_elsewhere:Holder.app", folder=tmp_path).router
    finally:
        sys.modules.pop("labkit_probe_elsewhere", None)
        sys.path.remove(str(tmp_path))


@pytest.mark.anyio
async def test_latency_everywhere_reaches_engines_made_before_it_and_leaves_with_it(
    tmp_path: Path,
) -> None:
    sync = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with sync.connect() as conn:  # a pooled connection without lab_sleep yet
        conn.execute(text("SELECT 1"))
    asynchronous = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    before = _listeners()
    with latency_everywhere(40):
        start = time.perf_counter()
        with sync.connect() as conn:
            conn.execute(text("SELECT 1"))
        async with asynchronous.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert time.perf_counter() - start >= 0.08  # two statements, 40 ms each
    assert _listeners() == before
    sync.dispose()
    await asynchronous.dispose()


@pytest.mark.anyio
async def test_on_postgres_the_wait_is_pg_sleep_and_only_psycopg_on_the_loop_holds_it(
    postgres_url: URL,
) -> None:
    sync = create_engine(database_url(postgres_url))  # psycopg
    asynchronous = create_async_engine(async_url(postgres_url))  # asyncpg
    with watch_statement_threads() as seen, latency_everywhere(40):
        start = time.perf_counter()
        with sync.connect() as conn:
            conn.execute(text("SELECT 1"))
        async with asynchronous.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert time.perf_counter() - start >= 0.08
    assert seen.on_loop_sync >= 1 and seen.on_loop_async >= 1 and seen.elsewhere == 0
    assert seen.loop_held_s >= 0.04  # psycopg's wait, on the loop; asyncpg's does not count
    sync.dispose()
    await asynchronous.dispose()


def test_watch_engine_none_counts_connections_out_across_every_pool(tmp_path: Path) -> None:
    first = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    second = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with watch_engine(None) as counts:
        with first.connect() as a, second.connect() as b:
            a.execute(text("SELECT 1"))
            b.execute(text("SELECT 2"))
        with first.connect() as a:
            a.execute(text("SELECT 3"))
    assert (counts.statements, counts.peak_checked_out, counts.checkouts) == (3, 2, 3)
    first.dispose()
    second.dispose()


def _point(
    c: int,
    rps: float,
    *,
    cpu: float = 0.2,
    conns: int = 0,
    threads: int = 0,
    in_threads: int = 0,
    held_s: float = 0.0,
    pool: Pool | None = None,
) -> ProbePoint:
    """A point as a 1-second run would measure it, for judging `limit_of` without a load."""
    result = LoadResult(
        setup="/p", concurrency=c, requests=int(rps), latency_ms=20.0, elapsed_s=1.0, cpu_s=cpu,
        response_times_s=array("d"), server_total_s=array("d"), server_db_s=array("d"),
        statuses=Counter({200: int(rps)}), errors=Counter(), reasons=Counter(),
        lag=LagTrace(0.001), peak_threads=threads,
    )  # fmt: skip
    seen = StatementThreads(
        0, on_loop_sync=int(held_s > 0), elsewhere=in_threads, loop_held_s=held_s
    )
    if pool is not None:
        seen.pools[id(pool)] = pool
    return ProbePoint("/p", result, EngineCounts(peak_checked_out=conns), seen)


@pytest.mark.parametrize(
    ("top", "limit"),
    [
        ({"rps": 10, "held_s": 0.95, "conns": 10}, "event loop"),
        ({"rps": 10, "cpu": 0.95, "conns": 15, "threads": 40}, "cpu"),  # all full, CPU-bound
        ({"rps": 10, "conns": 15, "threads": 40}, "pool"),  # threads wait for connections too
        ({"rps": 10, "conns": 20, "threads": 40, "in_threads": 10}, "threads"),  # pool of 60
        ({"rps": 10, "conns": 10}, "other"),  # nothing full, the CPU idle, and yet flat
        ({"rps": 0}, "failed"),
    ],
)
def test_each_limit_is_told_from_what_was_measured(top: dict[str, float], limit: str) -> None:
    """At C=80, with 45 rps at C=1 and 10 at the top: what the probe blames, and why."""
    engine = create_engine(
        "sqlite://", poolclass=QueuePool, pool_size=60 if limit == "threads" else 15, max_overflow=0
    )
    first = _point(1, 45, cpu=0.005, pool=engine.pool)  # 0.1 ms of CPU per request: knee ~200
    points = [first, _point(80, pool=engine.pool, **top)]  # type: ignore[arg-type]
    assert limit_of(points[1], points) == limit
    engine.dispose()


def test_throughput_that_keeps_up_with_the_clients_is_limited_by_them() -> None:
    points = [_point(1, 45), _point(10, 400)]
    assert limit_of(points[1], points) == "clients"


def test_flat_throughput_near_the_models_cpu_knee_is_the_cpus() -> None:
    """At C=1, 45 rps on 11 ms of CPU each: the wait is 11 ms too, so the model's CPU knee is
    at C_eff 2; at C=80 nothing is full and the process is busy half of a core, yet flat."""
    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=15, max_overflow=0)
    first = _point(1, 45, cpu=0.5, pool=engine.pool)
    top = _point(80, 50, cpu=0.5, conns=10, pool=engine.pool)
    assert diagnose(top, [first, top]).cpu_knee == pytest.approx(2)
    assert limit_of(top, [first, top]) == "cpu"
    said = verdict([first, top])
    assert "held back by the CPU" in said and "CPU knee is near C_eff=2" in said
    engine.dispose()
    quick = _point(1, 45, cpu=0.005)  # 0.1 ms of CPU per request: the knee near 200
    assert limit_of(top, [quick, top]) == "other"


def test_a_path_whose_first_point_failed_has_no_model() -> None:
    failed, top = _point(1, 0), _point(10, 40)
    assert math.isnan(diagnose(top, [failed, top]).cpu_knee)
    assert limit_of(top, [failed, top]) == "other"


def test_a_route_with_statements_on_threads_is_not_run_from_threads_plus_pool_clients() -> None:
    """The model's deadlock rule for statements on worker threads: from 40 threads + 15
    connections. Threads that ran no statement (a class dependency's __init__) hold no
    connection: that route, like one on neither, only queues."""
    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=15, max_overflow=0)
    threaded = [_point(1, 45, threads=1, in_threads=45, pool=engine.pool)]
    assert stall(threaded, 54) is None
    why = stall(threaded, 55)
    assert why is not None and "40 threads + 15 connections" in why
    class_dependency = [_point(1, 45, threads=1, pool=engine.pool)]
    assert class_dependency[0].uses_threads and not class_dependency[0].statements_in_threads
    assert stall(class_dependency, 1000) is None
    assert stall([_point(1, 45, pool=engine.pool)], 1000) is None  # async: it only queues
    engine.dispose()
