"""Input that looks like SQL is only a string: it travels as a bound parameter, never as SQL text.

The lookup `users_with_email` compares the column with a parameter, so ``' OR 1=1 --`` finds no
user (it would find the first user, or all, if it were pasted into the SQL), and a name carrying
``DROP TABLE`` is stored as it was typed. The captured statements show where the value went.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import URL
from support import every_backend

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.bench.setups import SETUPS
from labkit.instruments.sqllog import capture_sql
from labkit.shop.models import User

pytestmark = [pytest.mark.anyio, every_backend]

LOOKS_LIKE_SQL = ["' OR 1=1 --", "user0001@example.com' OR '1'='1", "x'; DROP TABLE users; --"]
ROBERT = "Robert'); DROP TABLE users; --"


def bound_values(parameters: Any) -> list[Any]:
    """The values a driver received beside the statement (a dict or a sequence, by driver)."""
    return list(parameters.values()) if isinstance(parameters, dict) else list(parameters)


async def test_sql_in_a_query_or_a_name_is_bound_and_the_table_stays_intact(db_url: URL) -> None:
    app = create_app(db_url)
    engines = {"blocking": app.sync_db.engine, "threadpool": app.sync_db.engine}
    engines["async"] = app.async_db.engine
    async with lab_client(app) as client:
        with app.sync_db.SessionLocal() as session:
            users_before = session.scalar(select(func.count()).select_from(User))
        tables_before = inspect(app.sync_db.engine).get_table_names()

        for setup in SETUPS:
            for text in LOOKS_LIKE_SQL:
                with capture_sql(engines[setup]) as sent:
                    response = await client.get(f"/{setup}/users", params={"email": text})
                assert response.status_code == 404, (setup, text, response.text)
                assert response.json() == {"detail": f"no user with email {text!r}"}
                [(statement, parameters)] = sent.entries
                assert text not in statement
                assert bound_values(parameters) == [text], (setup, parameters)

            email = f"robert.{setup}@example.com"
            created = await client.post(f"/{setup}/users", json={"name": ROBERT, "email": email})
            assert created.status_code == 201, created.text
            stored = await client.get(f"/{setup}/users/{created.json()['id']}")
            assert stored.json()["name"] == ROBERT

        with app.sync_db.SessionLocal() as session:
            assert session.scalar(select(func.count()).select_from(User)) == users_before + 3
        assert inspect(app.sync_db.engine).get_table_names() == tables_before
