"""What pytest needs to know about the notebooks and the tests together: which are slow, which
need PostgreSQL, how the notebooks' outputs are compared on PostgreSQL, and which notebooks run
a second time in the same kernel.

It sits beside `notebooks/` and `tests/` so that pytest reads it whichever of the two it is given
(``pytest``, ``pytest notebooks``, ``pytest tests``). ``pytest -m "not slow"`` is the quick loop.
Slow are the notebooks (nbval's items, and the tests that run or serve them), every test that
works on PostgreSQL, and the tests marked ``@pytest.mark.slow`` by hand: timing experiments that
wait out pool timeouts, and servers.
On PostgreSQL, the shop app's tests (tests/shop) get a scratch database as `TEST_DATABASE_URL`.
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell
from sqlalchemy.engine import make_url

from labkit.infra.notebook_database import selected_backend
from labkit.infra.pgbouncer import pgbouncer_if_any
from labkit.infra.postgres import (
    NoPostgres,
    drop_database,
    find_server,
    fresh_postgres_database,
    server_if_any,
)
from labkit.settings import lab_settings

POSTGRES_SANITIZERS = Path(__file__).parent / "tests" / "sanitize_postgres.cfg"
SHOP_TESTS = Path(__file__).parent / "tests" / "shop"
"""The shop app's own tests: they read their database from
`TEST_DATABASE_URL`, in-memory SQLite when it is unset."""
SHOP_TEST_DATABASE = "TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Under a PostgreSQL `DATABASE_URL`, nbval compares the notebooks' stored outputs (an SQLite
    run's) through sanitize_postgres.cfg as well: it writes both drivers' spelling of the same
    SQL and errors alike. nbval reads one file, so the two are joined into a temporary one.
    The shop app's tests then get a PostgreSQL database too (`give_shop_tests_postgres`)."""
    give_shop_tests_postgres(config)
    given = config.option.nbval_sanitize_with
    if selected_backend() != "postgresql" or not given:
        return
    folder = Path(tempfile.mkdtemp(prefix="lab-sanitize-"))
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    joined = folder / "sanitize.cfg"
    rules = [Path(config.rootpath, given).read_text(), POSTGRES_SANITIZERS.read_text()]
    joined.write_text("\n".join(rules))
    config.option.nbval_sanitize_with = str(joined)


def give_shop_tests_postgres(config: pytest.Config) -> None:
    """Under a PostgreSQL `DATABASE_URL`, run the shop app's tests on PostgreSQL as well, in a new
    database of their own (never the one `DATABASE_URL` names), dropped when the run ends.

    A `TEST_DATABASE_URL` set by hand is kept. Where no server answers, the shop app's tests stay
    on SQLite, unless LAB_REQUIRE_POSTGRES is set: then the run fails, saying why.
    """
    if selected_backend() != "postgresql" or os.environ.get(SHOP_TEST_DATABASE):
        return
    server, _why_not = server_if_any()
    if server is None:
        return
    name = f"lab_test_shop_{secrets.token_hex(4)}"
    url = fresh_postgres_database(server, name)

    def done() -> None:
        os.environ.pop(SHOP_TEST_DATABASE, None)
        drop_database(server, name)

    config.add_cleanup(done)
    os.environ[SHOP_TEST_DATABASE] = url.render_as_string(hide_password=False)


def shop_tests_on_postgres(item: pytest.Item) -> bool:
    """One of the shop app's tests, run on PostgreSQL (quick on in-memory SQLite, the default)."""
    if SHOP_TESTS not in item.path.parents:
        return False
    url = os.environ.get(SHOP_TEST_DATABASE)
    return url is not None and make_url(url).get_backend_name() == "postgresql"


SLOW_FILES = {"test_jupyter_serves_notebooks.py", "test_jupyterlab_in_browser.py"}
"""Test files that serve the notebooks (one runs them in a browser): as slow as the notebooks."""

POSTGRES_FIXTURES = {"postgres_server", "postgres_url"}


def is_slow(item: pytest.Item) -> bool:
    """A notebook's cell, a test that runs or serves notebooks, or one that works on PostgreSQL
    (through its fixtures, as the ``postgresql`` case of `support.every_backend`, or as one of
    the shop app's tests on PostgreSQL)."""
    if item.path.suffix == ".ipynb" or item.path.name in SLOW_FILES:
        return True
    if shop_tests_on_postgres(item):
        return True
    if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("db_url") == "postgresql"


POSTGRES_NOTEBOOKS = {"06_postgres_and_pools.ipynb", "10_workers_and_pgbouncer.ipynb"}
"""The notebooks about PostgreSQL, which use it whatever `DATABASE_URL` says: a run without a
PostgreSQL `DATABASE_URL` would repeat the run with one exactly, so it skips them (together
they would cost more than a minute, for nothing). Under a PostgreSQL `DATABASE_URL`, every
notebook needs a server."""

PGBOUNCER_NOTEBOOKS = {"10_workers_and_pgbouncer.ipynb"}
"""The notebook that starts PgBouncer (Debian's ``pgbouncer``) in front of PostgreSQL."""


SQLITE_NOTEBOOKS = {"05_concurrent_requests.ipynb"}
"""Notebooks that run on SQLite whatever `DATABASE_URL` says: a run on PostgreSQL repeats the
SQLite run exactly, so it skips them (the timing notebook would cost a minute, for nothing)."""


def same_whatever_database_url(item: pytest.Item) -> bool:
    """A test that works on the database it names, not on `DATABASE_URL`'s: on PostgreSQL
    through its fixtures, or on each backend (`support.every_backend`). A run with a
    PostgreSQL `DATABASE_URL` would repeat the run without it exactly."""
    if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "db_url" in callspec.params


def needs_postgres(item: pytest.Item) -> bool:
    if item.path.suffix != ".ipynb" or item.path.name in SQLITE_NOTEBOOKS:
        return False
    return item.path.name in POSTGRES_NOTEBOOKS or selected_backend() == "postgresql"


TIMING_NOTEBOOKS = {
    "00_start_here.ipynb",
    "04_loading_and_n_plus_1.ipynb",
    "05_concurrent_requests.ipynb",
    "06_postgres_and_pools.ipynb",
    "07_check_yourself.ipynb",
    "09_transactions_and_tests.ipynb",
    "10_workers_and_pgbouncer.ipynb",
}
"""Notebooks that time things: nbval runs them once. Running their experiments twice would
double the suite's longest part for little more evidence (00 measures nest_asyncio in two
processes; 04 times its listings; 07 measures the page's comparison table; 09 times concurrent
withdrawals; 10 times worker processes and PgBouncer)."""


def run_again(items: list[pytest.Item]) -> list[pytest.Item]:
    """`items`, where each notebook collected whole (and not a timing notebook) is followed by its
    cells once more, as items named "Cell N, run again", in the kernel of the first run.

    nbval checks a notebook in a fresh kernel. A reader instead runs cells again in the kernel
    they have: a notebook that leaks state between runs (a handler added twice, a database left
    half changed) would pass nbval and still mislead them. The second run's items are nbval's
    own, on the same notebook, so its outputs must match the stored ones again, through the same
    sanitizers and ``NBVAL_IGNORE_OUTPUT`` marks; and since they share the first run's kernel,
    nothing is restarted between the two.
    """
    result: list[pytest.Item] = []
    for index, item in enumerate(items):
        result.append(item)
        following = items[index + 1] if index + 1 < len(items) else None
        if not isinstance(item, IPyNbCell) or item.path.name in TIMING_NOTEBOOKS:
            continue
        if following is not None and following.parent is item.parent:
            continue
        cells = [i for i in items if isinstance(i, IPyNbCell) and i.parent is item.parent]
        code_cells = sum(cell.cell_type == "code" for cell in item.parent.nb.cells)
        if len(cells) != code_cells:  # some cells chosen by name: no whole second run
            continue
        result += [
            IPyNbCell.from_parent(
                cell.parent,
                name=f"{cell.name}, run again",
                cell_num=cell.cell_num,
                cell=copy.deepcopy(cell.cell),  # nbval merges the stored streams in place
                options=cell.options,
            )
            for cell in cells
        ]
    return result


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Add the notebooks' second runs (`run_again`) and mark the slow tests, before ``-m``
    deselects by marker; on PostgreSQL skip the notebooks that keep SQLite and the tests that
    name their database (`same_whatever_database_url`), and without it the notebooks that keep
    PostgreSQL. Then, of the
    tests left, skip the notebook cells that need PostgreSQL, with the reason, where no server
    can be found (so a run that leaves the notebooks out never looks for one).

    The notebook that needs PgBouncer as well is skipped, with the reason, where it is missing.

    Under LAB_REQUIRE_POSTGRES nothing that needs PostgreSQL or PgBouncer is skipped: the
    notebook then fails at its first cell that needs one, with the same reason, and CI goes red.
    """
    on_postgres = selected_backend() == "postgresql"
    items[:] = run_again(items)
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
        if on_postgres and item.path.name in SQLITE_NOTEBOOKS:
            reason = "runs on SQLite whatever DATABASE_URL says: the run without it checks it"
            item.add_marker(pytest.mark.skip(reason=reason))
        if on_postgres and same_whatever_database_url(item):
            reason = "runs the same whatever DATABASE_URL says: the run without it checks it"
            item.add_marker(pytest.mark.skip(reason=reason))
        if not on_postgres and item.path.name in POSTGRES_NOTEBOOKS:
            reason = (
                "runs on PostgreSQL whatever DATABASE_URL says: the run with a PostgreSQL "
                "DATABASE_URL checks it"
            )
            item.add_marker(pytest.mark.skip(reason=reason))
    yield
    needing = [item for item in items if needs_postgres(item)]
    if not needing or lab_settings().require_postgres:
        return
    try:
        find_server()
    except NoPostgres as exc:
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=str(exc)))
        return
    program, why_not = pgbouncer_if_any()
    if program is None:
        for item in needing:
            if item.path.name in PGBOUNCER_NOTEBOOKS:
                item.add_marker(pytest.mark.skip(reason=why_not))
