"""Every response says, in ``Server-Timing``, how long the app took and how much was database."""

from __future__ import annotations

import pytest

from labkit.app.client import lab_client
from labkit.bench.setups import SETUPS
from labkit.instruments.server_timing import format_server_timing, parse_server_timing

pytestmark = pytest.mark.anyio


def test_header_value_round_trips() -> None:
    value = format_server_timing(db_s=0.0504, total_s=0.0521)
    assert value == 'db;dur=50.40;desc="database", total;dur=52.10'
    assert parse_server_timing(value) == {"db": 50.4, "total": 52.1}
    assert parse_server_timing("cache;desc=hit, app;dur=3") == {"cache": 0.0, "app": 3.0}


@pytest.mark.parametrize("setup", SETUPS)
async def test_database_time_includes_the_simulated_wait(make_app, setup: str) -> None:
    async with lab_client(make_app(latency_ms=30)) as client:
        await client.get(f"/{setup}/users/1")  # the first request also opens a connection
        response = await client.get(f"/{setup}/users/2")
    timing = parse_server_timing(response.headers["server-timing"])
    assert 30 <= timing["db"] < 100
    assert timing["db"] <= timing["total"]


async def test_health_and_errors_carry_the_header_too(app_client) -> None:
    _app, client = app_client
    health = parse_server_timing((await client.get("/health")).headers["server-timing"])
    assert health["db"] == 0 and health["total"] > 0
    missing = await client.get("/async/users/999999")
    assert missing.status_code == 404
    assert parse_server_timing(missing.headers["server-timing"])["db"] > 0
