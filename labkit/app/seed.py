"""Create the tables and load the committed seed set (``data/users.csv``, ``data/posts.csv``).

The seed is deterministic, so every notebook, test and reader sees the same users and posts,
and stored notebook outputs stay comparable. It is loaded once: a database that already has
users is left as it is.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from labkit.settings import DATA_DIR
from labkit.shop.models import Base, Post, User


@cache
def _read_csv(path: Path) -> tuple[dict[str, int | str], ...]:
    with path.open(newline="") as f:
        return tuple(
            {key: int(value) if key.endswith("id") else value for key, value in row.items()}
            for row in csv.DictReader(f)
        )


def seed_users() -> tuple[dict[str, int | str], ...]:
    """The seed users as rows (``id``, ``name``, ``email``)."""
    return _read_csv(DATA_DIR / "users.csv")


def seed_posts() -> tuple[dict[str, int | str], ...]:
    """The seed posts as rows (``id``, ``author_id``, ``title``)."""
    return _read_csv(DATA_DIR / "posts.csv")


def create_and_seed(engine: Engine) -> bool:
    """Create missing tables, then load the seed set if there are no users. True if it loaded."""
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        if session.scalar(select(func.count()).select_from(User)):
            return False
        session.execute(insert(User), list(seed_users()))
        session.execute(insert(Post), list(seed_posts()))
    if engine.url.get_backend_name() == "postgresql":
        _advance_postgres_sequences(engine)
    return True


def _advance_postgres_sequences(engine: Engine) -> None:
    """Explicit ids leave PostgreSQL's id sequences at 1; move them past the seed."""
    with engine.begin() as conn:
        for table in (User.__tablename__, Post.__tablename__):
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
