"""Two async tests on an engine made when this file is imported: one engine per async driver
named in `TEST_ASYNC_URLS` (space-separated URLs)."""

import os

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

URLS = os.environ["TEST_ASYNC_URLS"].split()
# At import: before pytest has started any event loop.
engines = {make_url(url).get_driver_name(): create_async_engine(url) for url in URLS}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=list(engines))
def engine(request: pytest.FixtureRequest) -> AsyncEngine:
    return engines[request.param]


@pytest.mark.anyio
async def test_first(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT 1")) == 1


@pytest.mark.anyio
async def test_second(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT 2")) == 2
