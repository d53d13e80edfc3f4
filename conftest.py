"""What pytest needs to know about the notebooks and the tests together: which are slow, which
need PostgreSQL, and how the notebooks' outputs are compared on PostgreSQL.

It sits beside `notebooks/` and `tests/` so that pytest reads it whichever of the two it is given
(``pytest``, ``pytest notebooks``, ``pytest tests``). ``pytest -m "not slow"`` is the quick loop.
Slow are the notebooks (nbval's items, and the tests that run or serve them), every test that
works on PostgreSQL, and the tests marked ``@pytest.mark.slow`` by hand: timing experiments that
wait out pool timeouts, and servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.scratch import selected_backend
from labkit.servers.postgres import REQUIRE_POSTGRES, NoPostgres, find_server

POSTGRES_SANITIZERS = Path(__file__).parent / "tests" / "sanitize_postgres.cfg"


def pytest_configure(config: pytest.Config) -> None:
    """Under a PostgreSQL `DATABASE_URL`, nbval compares the notebooks' stored outputs (an SQLite
    run's) through sanitize_postgres.cfg as well: it writes both drivers' spelling of the same
    SQL and errors alike. nbval reads one file, so the two are joined into a temporary one."""
    given = config.option.nbval_sanitize_with
    if selected_backend() != "postgresql" or not given:
        return
    folder = Path(tempfile.mkdtemp(prefix="lab-sanitize-"))
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    joined = folder / "sanitize.cfg"
    rules = [Path(config.rootpath, given).read_text(), POSTGRES_SANITIZERS.read_text()]
    joined.write_text("\n".join(rules))
    config.option.nbval_sanitize_with = str(joined)


SLOW_FILES = {"test_notebooks_rerun.py", "test_jupyter_serves_notebooks.py"}
"""Test files that run the notebooks or serve them: as slow as the notebooks themselves."""

POSTGRES_FIXTURES = {"postgres_server", "postgres_url"}


def is_slow(item: pytest.Item) -> bool:
    """A notebook's cell, a test that runs or serves notebooks, or one that works on PostgreSQL
    (through its fixtures, or as the ``postgresql`` case of `support.every_backend`)."""
    if item.path.suffix == ".ipynb" or item.path.name in SLOW_FILES:
        return True
    if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("db_url") == "postgresql"


POSTGRES_NOTEBOOKS = {"06_postgres_and_pools.ipynb"}
"""The notebook about PostgreSQL. Under a PostgreSQL `DATABASE_URL`, every notebook needs one."""


SQLITE_NOTEBOOKS = {"05_concurrent_requests.ipynb"}
"""Notebooks that run on SQLite whatever `DATABASE_URL` says: a run on PostgreSQL repeats the
SQLite run exactly, so it skips them (the timing notebook would cost a minute, for nothing)."""


def needs_postgres(item: pytest.Item) -> bool:
    if item.path.suffix != ".ipynb" or item.path.name in SQLITE_NOTEBOOKS:
        return False
    return item.path.name in POSTGRES_NOTEBOOKS or selected_backend() == "postgresql"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Mark the slow tests, before ``-m`` deselects by marker, and on PostgreSQL skip the
    notebooks that keep SQLite. Then, of the tests left, skip the notebook cells that need
    PostgreSQL, with the reason, where no server can be found (so a run that leaves the
    notebooks out never looks for one).

    Under LAB_REQUIRE_POSTGRES nothing that needs PostgreSQL is skipped: the notebook then fails
    at its first PostgreSQL cell, with the same reason, and CI goes red.
    """
    on_postgres = selected_backend() == "postgresql"
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
        if on_postgres and item.path.name in SQLITE_NOTEBOOKS:
            reason = "runs on SQLite whatever DATABASE_URL says: the run without it checks it"
            item.add_marker(pytest.mark.skip(reason=reason))
    yield
    needing = [item for item in items if needs_postgres(item)]
    if not needing or os.environ.get(REQUIRE_POSTGRES):
        return
    try:
        find_server()
    except NoPostgres as exc:
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=str(exc)))
