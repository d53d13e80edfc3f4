"""``python -m labkit probe`` on an app as people ship one (probe_apps/shipped.py): a factory,
middleware around it, a bearer token, UUID keys, a POST with JSON, a class dependency on an
async route, a sync `Session` in ``async def``, and a route that fails one request in three.
No line of the app is written for the probe; everything here goes through the command line.

As a user would: seed with the probe's own POST, take the new rows' keys from the database,
then probe the reads with them. Growth is a ratio within one run (C=10 against C=1), at 50 ms a
statement: at 20 ms a slow machine's CPU caps it near x5 (`(L + s) / s` with s near 5 ms), and
in the whole suite it came out x3.7 and x3.8. Each point is 80 requests: with 4 per client,
how the clients' first requests start together moved the ratio by half (2.5 to 6.4 in four
runs of one route at 20 ms), with 8 it stayed within 5.3 to 7.5.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.__main__ import main

pytestmark = pytest.mark.slow  # each test loads the app for seconds

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
TOKEN = "Authorization: Bearer change-me"
LATENCY = ["--latency", "20"]


def _probe(*args: str) -> tuple[int, str, list[dict[str, str]]]:
    """The command's exit code, what it printed (stdout and stderr) and its CSV rows."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(["probe", *args, "--csv", "-"])
    text = printed.getvalue()
    rows = [line for line in text.splitlines() if line.count(",") > 10]  # the CSV's lines
    return code, text, list(csv.DictReader(io.StringIO("\n".join(rows))))


def _probe_alone(folder: Path, *args: str) -> tuple[int, str, list[dict[str, str]]]:
    """As `_probe`, in a process of its own, as a user runs it. Timing claims need one: in the
    test process, after hundreds of tests, the same run grew x3.7 where alone it grows x5 to x7."""
    done = subprocess.run(
        [sys.executable, "-m", "labkit", "probe", *args, "--csv", "-"],
        cwd=ROOT, env={**os.environ, "PROBE_APPS_DIR": str(folder)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr, list(csv.DictReader(io.StringIO(done.stdout)))


@pytest.fixture(scope="module")
def seeded(probe_apps_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The POST's output, and a file with the keys of the items it made, one per line."""
    folder = tmp_path_factory.mktemp("seed")
    (folder / "item.json").write_text('{"name": "Widget"}')
    code, printed, rows = _probe(
        "tests.probe_apps.shipped:create_app", "--factory", "--json", f"@{folder / 'item.json'}",
        "-H", TOKEN, "--path", "/items", "--concurrency", "1,10", "--requests", "30", *LATENCY,
    )  # fmt: skip
    assert code == 0, printed
    with sqlite3.connect(probe_apps_dir / "shipped.db") as db:
        keys = [key for (key,) in db.execute("SELECT id FROM items ORDER BY name, id LIMIT 50")]
    (folder / "ids.txt").write_text("\n".join(keys))
    return printed + "\n" + repr([(row["C"], row["ok"], row["failed"]) for row in rows]), folder


def test_the_post_succeeds_at_every_concurrency(seeded: tuple[str, Path]) -> None:
    said, folder = seeded
    assert "probing tests.probe_apps.shipped:create_app: POST" in said
    assert "[('1', '30', '0'), ('10', '30', '0')]" in said
    assert len((folder / "ids.txt").read_text().split()) >= 50


def test_each_route_of_a_shipped_app_gets_its_own_verdict(
    seeded: tuple[str, Path], probe_apps_dir: Path
) -> None:
    _, folder = seeded
    plot = folder / "probe.png"
    paths = ["/items", "/items/{item_id}", "/legacy/items/{item_id}", "/ledger/{item_id}"]
    code, said, rows = _probe_alone(
        probe_apps_dir,
        "tests.probe_apps.shipped:app", "-H", TOKEN, "--values", f"item_id=@{folder / 'ids.txt'}",
        "--concurrency", "1,10,60", "--requests", "80", "--plot", str(plot), "--latency", "50",
        *(f"--path={p}" for p in paths),
    )  # fmt: skip
    assert code == 0, said
    at = {(row["path"], int(row["C"])): row for row in rows}
    assert sorted({path for path, _ in at}) == sorted(paths)
    # The sync Session in `async def`: flagged, flat, and not run where it would stall.
    legacy = "/legacy/items/{item_id}"
    assert at[legacy, 1]["loop_held"] == at[legacy, 10]["loop_held"] == "True"
    assert float(at[legacy, 10]["rps"]) / float(at[legacy, 1]["rps"]) < 1.5
    assert (legacy, 60) not in at and "C=60 not run" in said
    # The async routes scale ...
    for path in ("/items", "/items/{item_id}"):
        growth = float(at[path, 10]["rps"]) / float(at[path, 1]["rps"])
        assert growth >= 4, (path, growth)
        assert at[path, 10]["loop_held"] == "False"
    # ... and the one with a class dependency runs at C=60: its threads ran no statement.
    assert (at["/items", 60]["ok"], at["/items", 60]["failed"]) == ("180", "0")
    assert at["/items", 60]["stmts_in_threads"] == "False"
    flat = said.replace("\n  ", " ")
    assert "Worker threads ran dependency Page (class), and no statement ran there" in flat
    # The failing route: its own exception, its traceback's line, its failures counted.
    for c, requests in ((1, 80), (10, 80), (60, 180)):
        row = at["/ledger/{item_id}", c]  # one call in three fails, counted from the first
        assert requests // 3 <= int(row["failed"]) <= -(-requests // 3), row
        assert row["limit"] == "failed", row
        assert (
            row["failures"]
            == f"500 ({row['failed']}); the app raised LedgerError {row['failed']} times"
        )
    assert "The app raised LedgerError: ledger out of balance for item" in said
    assert 'raise LedgerError(f"ledger out of balance' in said
    assert "/ledger/{item_id}: held back by failures" in flat
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_token_is_said_with_the_apps_answer() -> None:
    code, said, rows = _probe(
        "tests.probe_apps.shipped:app", "--path", "/items", "--concurrency", "1",
        "--requests", "3",
    )  # fmt: skip
    assert code == 0
    assert [(row["ok"], row["failed"], row["failures"]) for row in rows] == [("0", "3", "401 (3)")]
    assert "/items: no request succeeded (401 (3))" in said.replace("\n  ", " ")
    assert '/items answered 401 first with: {"detail":"Not authenticated"}' in said


def test_the_command_imports_from_app_dir_calls_the_factory_and_stays_quiet(
    probe_apps_dir: Path, tmp_path: Path
) -> None:
    """In a process of its own, from another folder, with the app's root logger at INFO."""
    done = subprocess.run(
        [sys.executable, "-m", "labkit", "probe", "probe_apps.shipped:create_app", "--factory",
         "--app-dir", str(TESTS), "-X", "POST", "-H", "Content-Type: application/json",
         "-d", '{"name": "Gadget"}', "-H", TOKEN, "--path", "/items", "--concurrency", "1,4",
         "--requests", "8"],
        cwd=tmp_path, env={**os.environ, "PROBE_APPS_DIR": str(probe_apps_dir)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "probing probe_apps.shipped:create_app: POST" in done.stdout
    assert [line.split()[:4] for line in done.stdout.splitlines()[2:4]] == [
        ["/items", "1", "8", "0"],
        ["/items", "4", "12", "0"],
    ]
    assert "HTTP Request" not in done.stderr and "created" not in done.stderr, done.stderr
