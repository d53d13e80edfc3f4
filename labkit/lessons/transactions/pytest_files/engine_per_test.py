"""Two async tests on an engine made in each test's own event loop: one engine per async driver
named in `TEST_ASYNC_URLS` (space-separated URLs), disposed when the test ends."""

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

URLS = {make_url(url).get_driver_name(): url for url in os.environ["TEST_ASYNC_URLS"].split()}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=list(URLS))
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    # Made in the test's own event loop, and disposed in it before the loop closes.
    engine = create_async_engine(URLS[request.param])
    yield engine
    await engine.dispose()


@pytest.mark.anyio
async def test_first(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT 1")) == 1


@pytest.mark.anyio
async def test_second(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT 2")) == 2
