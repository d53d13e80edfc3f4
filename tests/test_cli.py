"""``python -m labkit``: bench prints the grid, serve runs the app on loopback, drive loads it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest

import labkit.__main__ as cli
from labkit.__main__ import is_loopback, main
from labkit.app.databases import EngineOptions
from labkit.app.serve import ServeOptions, uvicorn_process
from labkit.bench.drive import drive_elsewhere
from labkit.bench.setups import SETUPS
from labkit.settings import sqlite_url


@pytest.mark.slow
def test_bench_prints_a_table_and_writes_csv_and_plot(tmp_path: Path, capsys) -> None:
    out_csv, out_png = tmp_path / "grid.csv", tmp_path / "grid.png"
    code = main(
        [
            "bench",
            "--setups", "health,blocking,async",
            "--concurrency", "1,3",
            "--latency", "0,5",
            "--requests", "12",
            "--database", f"sqlite:///{tmp_path / 'bench.db'}",
            "--csv", str(out_csv),
            "--plot", str(out_png),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "pool 3 + 0" in printed  # sized to the largest concurrency
    assert "CPU per request s (L=0, C=1): blocking" in printed
    header = next(line for line in printed.splitlines() if line.split()[:1] == ["setup"])
    assert header.split()[:6] == ["setup", "C", "L_ms", "ok", "failed", "rps"]
    assert "model_rps" in header and "limit" in header
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 3 * 2 * 2
    assert {row["ok"] for row in rows} == {"12"}
    assert {row["limit"] for row in rows if row["setup"] == "blocking"} <= {"cpu", "event loop"}
    assert out_png.read_bytes().startswith(b"\x89PNG")
    assert "peak memory (RSS)" in printed


@pytest.mark.slow
def test_bench_warns_before_the_blocking_setup_deadlocks(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "bench", "--setups", "blocking", "--concurrency", "3", "--latency", "20",
            "--requests", "3", "--pool-size", "1", "--max-overflow", "0", "--pool-timeout", "0.3",
            "--database", f"sqlite:///{tmp_path / 'bench.db'}", "--no-model",
        ]
    )  # fmt: skip
    # The deadlock: while one request's query holds the loop for its 20 ms, the others' sessions
    # are made (get_db runs in worker threads); the next route to run asks the pool's one
    # connection from the loop, so the loop can never start the first request's clean-up that
    # would give it back. With no wait (L = 0) the clean-up can win that race: a test that
    # depended on it failed 1 run in 20 on a busy machine.
    assert code == 0
    captured = capsys.readouterr()
    assert "blocking with C=3 > pool 1 can deadlock" in captured.err
    assert "model_rps" not in captured.out
    row = next(line for line in captured.out.splitlines() if line.startswith("blocking"))
    ok, failed = (int(n) for n in row.split()[3:5])
    assert ok + failed == 3 and failed >= 1  # stalled for the pool timeout, then 503


def test_bench_csv_on_stdout_keeps_the_table_on_stderr(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "bench", "--setups", "health", "--concurrency", "2", "--latency", "0",
            "--requests", "5", "--csv", "-", "--database", f"sqlite:///{tmp_path / 'b.db'}",
        ]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    (row,) = csv.DictReader(io.StringIO(captured.out))
    assert row["setup"] == "health" and row["ok"] == "5"
    assert "peak memory" in captured.err


def test_bad_arguments_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--setups", "sideways"])
    assert "unknown setup" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--concurrency", "one"])


def test_drive_keeps_to_this_machine(capsys) -> None:
    assert is_loopback("http://127.0.0.1:8000") and is_loopback("http://localhost:1")
    assert is_loopback("http://[::1]:8000")
    assert not is_loopback("http://192.168.1.10:8000")
    assert main(["drive", "http://example.com"]) == 2
    assert "only loads servers on this machine" in capsys.readouterr().out


def test_serve_hands_its_options_to_run_workers(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``serve`` is one caller of `run_workers`, as `uvicorn_process` is: its flags become one
    `ServeOptions`, and nothing reaches the workers another way."""
    given: list[ServeOptions] = []
    monkeypatch.setattr(cli, "run_workers", given.append)
    url = "postgresql://lab:secret@127.0.0.1:5432/lab"
    code = main(
        [
            "serve", "--port", "8123", "--workers", "3", "--latency", "5", "--pool-size", "4",
            "--max-overflow", "0", "--threads", "7", "--no-prepared-statements", "--database", url,
        ]
    )  # fmt: skip
    assert code == 0 and "http://127.0.0.1:8123" in capsys.readouterr().out
    engine = EngineOptions(latency_ms=5, pool_size=4, max_overflow=0, no_prepared_statements=True)
    assert given == [ServeOptions(url, engine, threads=7, port=8123, workers=3)]
    assert ServeOptions.from_json(given[0].to_json()) == given[0]  # as the workers read it


@pytest.mark.slow
def test_serve_answers_on_loopback_and_drive_loads_it_from_another_process(db_url) -> None:
    with uvicorn_process(db_url, EngineOptions(latency_ms=5)) as server:
        base = server.url
        assert base.startswith("http://127.0.0.1:")
        health = httpx.get(f"{base}/health")
        assert health.json() == {"status": "ok"} and "server-timing" in health.headers
        row = drive_elsewhere(base, "async", requests=20, concurrency=4)
    assert row["setup"] == "async" and row["ok"] == 20 and row["failed"] == 0
    assert row["p50_ms"] >= 5  # the simulated wait, over a real socket
    with pytest.raises(httpx.TransportError):  # the server stopped with the block
        httpx.get(f"{base}/health", timeout=1)


@pytest.mark.slow
def test_bench_warns_before_the_threadpool_setup_deadlocks(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "bench", "--setups", "threadpool", "--concurrency", "2,3", "--latency", "5",
            "--requests", "6", "--pool-size", "1", "--max-overflow", "0", "--pool-timeout", "0.3",
            "--threads", "2", "--database", f"sqlite:///{tmp_path / 'bench.db'}", "--no-model",
        ]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "threadpool with C=3 >= threads 2 + pool 1 can deadlock" in err
    assert "blocking" not in err


@pytest.mark.slow
def test_the_shop_app_is_served_by_uvicorn_as_it_is(tmp_path: Path) -> None:
    """``uvicorn labkit.shop.main:app``: no lab code between the server and the app."""
    with uvicorn_process(sqlite_url(tmp_path / "shop.db"), app="labkit.shop.main:app") as server:
        base = server.url
        created = {}
        for setup in SETUPS:
            new = {"name": "Grace Hopper", "email": f"grace.{setup}@example.com"}
            response = httpx.post(f"{base}/{setup}/users", json=new)
            assert response.status_code == 201, response.text
            created[setup] = response.json()
        for setup, user in created.items():
            assert httpx.get(f"{base}/{setup}/users/{user['id']}").json() == user
        missing = httpx.get(f"{base}/threadpool/users/999999")
        assert (missing.status_code, missing.json()) == (404, {"detail": "no user with id 999999"})
        assert "server-timing" not in missing.headers  # the lab's instruments are not there
