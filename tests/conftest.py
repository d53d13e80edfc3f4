"""Fixtures shared by labkit's tests: a fresh database per test, and the running app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from labkit import create_app, lab_client, sqlite_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_url(tmp_path: Path) -> URL:
    """A database of the test's own: a fresh SQLite file (PostgreSQL tests bring their own)."""
    return sqlite_url(tmp_path / "lab.db")


@pytest.fixture
def make_app(db_url: URL) -> Callable[..., FastAPI]:
    """`create_app` on the test's database, with options to vary."""

    def make(**options: Any) -> FastAPI:
        return create_app(db_url, **options)

    return make


@pytest.fixture
async def app_client(
    make_app: Callable[..., FastAPI],
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = make_app()
    async with lab_client(app) as client:
        yield app, client
