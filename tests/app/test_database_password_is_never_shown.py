"""The password in `DATABASE_URL` never appears in anything the lab shows.

Not in a response, an error, a log record (SQLAlchemy's SQL echo and pool logs included), a repr,
a traceback, or a notebook's stored outputs. The app is exercised with the password in the URL,
both passed directly and through `DATABASE_URL`: against a port where nothing listens (every
request fails), and against the lab's PostgreSQL server (trust authentication ignores the
password, so every route really runs).
"""

import json
import logging
import os
import re
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from labkit.app.client import BASE_URL, lab_client
from labkit.app.create import create_app
from labkit.app.databases import EngineOptions
from labkit.bench.setups import SETUPS
from labkit.settings import database_url, safe_url

pytestmark = pytest.mark.anyio

PASSWORD = "s3cr3t-pw"
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))

# A URL with a clear-text password: scheme://user:password@ (a masked one shows ***).
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?!\*\*\*@)[^\s/@'\"]+@")


def shown_by(app: Any) -> list[str]:
    """What the app's objects say of themselves: reprs of setups, engines, pools, factories."""
    things = [app.sync_db, app.async_db]
    for db in things[:]:
        things += [db.engine, db.engine.url, db.engine.pool, db.ledger]
    things.append(app.sync_db.SessionLocal)
    things.append(app.async_db.AsyncSessionLocal)
    return [repr(thing) for thing in things] + [str(thing) for thing in things]


def traceback_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def assert_password_absent(texts: list[str], password: str = PASSWORD) -> None:
    leaks = [shown for shown in texts if password in shown]
    assert leaks == [], leaks


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every logger: labkit, SQLAlchemy, the drivers
    return caplog


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [caplog.text] + [repr(record.args) for record in caplog.records]


@pytest.mark.parametrize("through_env", [False, True], ids=["argument", "DATABASE_URL"])
async def test_password_absent_when_the_server_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, everything_logged, capsys, through_env: bool
) -> None:
    url = f"postgresql://lab:{PASSWORD}@127.0.0.1:1/lab"
    if through_env:
        monkeypatch.setenv("DATABASE_URL", url)
    app = create_app(None if through_env else url, EngineOptions(echo=True, pool_timeout=2))
    shown = [*shown_by(app), safe_url(url), str(database_url(url))]

    transport = httpx.ASGITransport(app=app)  # no lifespan: it could not create the tables
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for setup in SETUPS:
            for response in [
                await client.get(f"/{setup}/users/1"),
                await client.get(f"/{setup}/users", params={"email": "a@example.com"}),
                await client.post(f"/{setup}/users", json={"name": "A", "email": "a@b.org"}),
            ]:
                assert response.status_code == 503
                shown += [response.text, str(response.headers)]

    with pytest.raises(Exception) as sync_failure:
        app.sync_db.engine.connect()
    with pytest.raises(Exception) as async_failure:
        async with app.async_db.engine.connect():
            pass
    with pytest.raises(ValueError) as unsupported:
        database_url(f"mysql://lab:{PASSWORD}@127.0.0.1/lab")
    for failure in (sync_failure, async_failure, unsupported):
        shown += [str(failure.value), repr(failure.value), traceback_of(failure.value)]
    app.sync_db.dispose()
    await app.async_db.dispose()

    printed = capsys.readouterr()
    assert_password_absent(shown + logged(everything_logged) + [printed.out, printed.err])
    assert "***" in safe_url(url)  # the masked form is what is shown instead


@pytest.fixture
def url_with_password(postgres_url: URL) -> URL:
    """The test's own database on the lab's server, with a password the server will ignore."""
    return postgres_url.set(password=PASSWORD)


async def test_password_absent_while_the_app_serves_and_fails(
    url_with_password: URL, everything_logged, capsys
) -> None:
    app = create_app(url_with_password, EngineOptions(echo=True))
    shown = shown_by(app)
    async with lab_client(app) as client:
        for setup in SETUPS:
            new_user = {"name": "A", "email": f"a.{setup}@example.com"}
            responses = [
                await client.get(f"/{setup}/users/1"),
                await client.get(f"/{setup}/users/999999"),
                await client.get(f"/{setup}/users/abc"),
                await client.post(f"/{setup}/users", json=new_user),
                await client.post(f"/{setup}/users", json=new_user),
            ]
            assert [r.status_code for r in responses] == [200, 404, 422, 201, 409]
            shown += [r.text for r in responses]
        with app.sync_db.engine.connect() as conn:  # cut every connection of the app
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        for setup in SETUPS:
            response = await client.get(f"/{setup}/users/2")
            shown += [response.text]
        shown += shown_by(app)

    printed = capsys.readouterr()
    assert_password_absent(shown + logged(everything_logged) + [printed.out, printed.err])
    assert any("SELECT" in message for message in logged(everything_logged))  # echo was on


def stored_outputs(notebook: dict[str, Any]) -> list[str]:
    """Every stored output of every code cell, as JSON text (streams, results, tracebacks)."""
    return [
        json.dumps(output, ensure_ascii=False)
        for cell in notebook.get("cells", [])
        for output in cell.get("outputs", [])
    ]


def password_leaks(notebook: dict[str, Any], passwords: list[str]) -> list[str]:
    found = []
    for output in stored_outputs(notebook):
        found += [match.group(0) for match in URL_WITH_PASSWORD.finditer(output)]
        found += [password for password in passwords if password and password in output]
    return found


def passwords_in_environment() -> list[str]:
    raw = os.environ.get("DATABASE_URL")
    return [make_url(raw).password or ""] if raw else []


def test_the_notebook_scan_finds_a_stored_password() -> None:
    """The scan below can fail: a clear-text URL is found, a masked one is not."""
    leaky = {
        "cells": [
            {"cell_type": "code", "outputs": [{"name": "stdout", "text": "ok\n"}]},
            {
                "cell_type": "code",
                "outputs": [
                    {"output_type": "stream", "text": f"postgresql://lab:{PASSWORD}@db/x\n"},
                    {"output_type": "stream", "text": "postgresql://lab:***@db/x\n"},
                ],
            },
        ]
    }
    assert password_leaks(leaky, []) == [f"postgresql://lab:{PASSWORD}@"]
    masked = {"cells": [{"outputs": [{"text": "postgresql+psycopg://lab:***@db/x"}]}]}
    assert password_leaks(masked, ["hunter2"]) == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_no_notebook_stores_a_password_in_its_outputs(notebook: Path) -> None:
    contents = json.loads(notebook.read_text(encoding="utf-8"))
    assert password_leaks(contents, [PASSWORD, *passwords_in_environment()]) == []
