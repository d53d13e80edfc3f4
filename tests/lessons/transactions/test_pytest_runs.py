"""Test files run as a suite of their own (`run_suite`), and the files notebook 09 runs so: the
override that hides a detached object, and an async engine that outlives its event loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from labkit.lessons.transactions import pytest_runs
from labkit.lessons.transactions.pytest_runs import run_suite, short

FILES = Path(pytest_runs.__file__).parent / "pytest_files"
SHOP_TESTS = Path(__file__).resolve().parents[2] / "shop"
LOOP_FILES = ("engine_at_import", "session_backend", "one_runner", "engine_per_test")


def test_short_keeps_the_class_and_the_point_of_a_message() -> None:
    message = (
        "sqlalchemy.orm.exc.DetachedInstanceError: Instance <User at 0x7f97cb047510> is not "
        "bound to a Session (Background on this error at: https://sqlalche.me/e/21/bhk3)"
    )
    assert (
        short(message)
        == "DetachedInstanceError: Instance <User at 0x...> is not bound to a Session"
    )
    nested = (
        "RuntimeError: Task <Task pending name='Task-43' coro=<TestRunner._run() running at "
        "/somewhere/_asyncio.py:2470>> got Future <Future pending cb=[Protocol._on_done()]> "
        "attached to a different loop"
    )
    assert (
        short(nested)
        == "RuntimeError: Task <Task ...> got Future <Future ...> attached to a different loop"
    )


def test_run_suite_reads_each_outcome(tmp_path: Path) -> None:
    source = tmp_path / "source.py"
    source.write_text(
        "import pytest\n\n"
        "@pytest.fixture\ndef broken():\n    raise KeyError('no such thing')\n\n"
        "def test_passes():\n    pass\n\n"
        "def test_fails():\n    assert 1 == 2\n\n"
        "def test_errors(broken):\n    pass\n"
    )
    run = run_suite({"test_three.py": source})
    assert run.returncode == 1
    assert list(run.outcomes) == [
        "test_three::test_passes",
        "test_three::test_fails",
        "test_three::test_errors",
    ]
    assert [o.outcome for o in run.outcomes.values()] == ["passed", "failed", "error"]
    assert run.outcomes["test_three::test_fails"].message.startswith("assert 1 == 2")
    assert "KeyError" in run.outcomes["test_three::test_errors"].message
    assert run.counts() == {"passed": 1, "failed": 1, "error": 1}
    assert run.lines("test_three")[:3] == [
        "PASSED  test_three::test_passes",
        "FAILED  test_three::test_fails",
        "        assert 1 == 2",
    ]
    assert run.lines("test_other") == []


@pytest.mark.slow
def test_lambda_session_hides_the_detached_user_a_session_per_request_shows() -> None:
    files = {"conftest.py": SHOP_TESTS / "conftest.py", "test_rename.py": FILES / "rename_email.py"}
    run = run_suite(files, {"TEST_DATABASE_URL": "sqlite://"})
    test = "test_rename::test_renaming_emails_the_new_name"
    assert run.outcomes[f"{test}[lambda: session]"].outcome == "passed"
    per_request = run.outcomes[f"{test}[a session per request]"]
    assert per_request.outcome == "failed" and "DetachedInstanceError" in per_request.message


def loop_suite(urls: list[str]) -> dict[str, str]:
    files = {f"test_{name}.py": FILES / f"{name}.py" for name in LOOP_FILES}
    run = run_suite(files, {"TEST_ASYNC_URLS": " ".join(urls)})
    return {test: result.outcome for test, result in run.outcomes.items()}


@pytest.mark.slow
def test_aiosqlite_serves_an_engine_made_at_import_in_every_loop() -> None:
    outcomes = loop_suite(["sqlite+aiosqlite://"])
    assert len(outcomes) == 8 and set(outcomes.values()) == {"passed"}


def test_asyncpg_fails_an_engine_made_at_import_in_a_second_loop(postgres_url: URL) -> None:
    url = postgres_url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    outcomes = loop_suite([url])
    failed = sorted(test for test, outcome in outcomes.items() if outcome != "passed")
    assert failed == [
        "test_engine_at_import::test_second[asyncpg]",
        "test_session_backend::test_second[asyncpg]",
    ]
