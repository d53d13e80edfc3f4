"""nest_asyncio, measured from outside: it is applied only in processes of the lab's own.

`nest_asyncio.apply()` patches asyncio for the whole process and for good, so these tests never
apply it here: they ask a `CalibratingProcess` what it runs on.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from sqlalchemy.engine import URL

from labkit.lessons.kernel_cost import (
    RUNNERS,
    CalibratingProcess,
    Calibrations,
    asyncio_object_costs,
    asyncio_origins,
    nest_asyncio_cost,
)


async def _origins_here() -> dict[str, str]:
    return asyncio_origins(asyncio.get_running_loop())


def test_keep_fastest_keeps_each_setups_fastest_round() -> None:
    found = Calibrations()
    found.keep_fastest("asyncio", {"async": 0.003, "blocking": 0.002})
    found.keep_fastest("asyncio", {"async": 0.001, "blocking": 0.004})
    assert found.cpu_s == {"asyncio": {"async": 0.001, "blocking": 0.002}}


def test_an_unknown_runner_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown runner"):
        CalibratingProcess(None, runner="uvloop")


def test_this_process_runs_asyncio_as_shipped() -> None:
    """The test process (like a kernel) never applies nest_asyncio: nothing comes from it."""
    origins = asyncio.run(_origins_here())
    assert not [where for where in origins.values() if where.startswith("nest_asyncio")]
    assert origins["asyncio.Task"] == "_asyncio.Task"  # the C task


def test_asyncio_object_costs_are_microseconds_per_task_and_future() -> None:
    costs = asyncio.run(asyncio_object_costs(count=100))
    assert set(costs) == {"task", "future"}
    assert all(0 < seconds < 0.001 for seconds in costs.values()), costs


@pytest.mark.slow  # two processes of their own
def test_nest_asyncio_replaces_every_part_in_its_own_process_only(db_url: URL) -> None:
    """Not a timing claim (notebook 00 makes it): every part replaced in the patched process
    only, and every setup measured in both."""
    found = asyncio.run(nest_asyncio_cost(db_url, requests=5, rounds=1, object_turns=2))
    assert found.origins["asyncio"] == asyncio.run(_origins_here())  # a plain process: as shipped
    patched = found.origins["nest_asyncio"]
    for part, where in patched.items():
        assert where != found.origins["asyncio"][part], part
    assert patched["asyncio.Task"] == "asyncio.tasks.Task"  # the pure-Python task
    assert patched["asyncio.Future"] == "asyncio.futures.Future"
    others = {p: w for p, w in patched.items() if p not in ("asyncio.Task", "asyncio.Future")}
    assert all(where.startswith("nest_asyncio.") for where in others.values()), others
    for runner in RUNNERS:
        assert set(found.calibrations.cpu_s[runner]) == {"blocking", "threadpool", "async"}
    for setup in ("blocking", "threadpool", "async"):
        assert math.isfinite(found.ratio(setup)) and found.ratio(setup) > 0
    assert [len(found.object_costs[runner]) for runner in RUNNERS] == [2, 2]
    for part in ("task", "future"):
        assert math.isfinite(found.object_ratio(part)) and found.object_ratio(part) > 0
    assert found.rows()[0] == {"part": "asyncio.run"} | {
        runner: found.origins[runner]["asyncio.run"] for runner in RUNNERS
    }


async def _calibrate_once(db_url: URL, setups: list[str]) -> dict[str, float]:
    async with CalibratingProcess(db_url, setups, requests=5, runner="nest_asyncio") as process:
        return await process.calibrate()


@pytest.mark.slow  # a process of its own
def test_a_failing_round_is_reported_with_its_error(db_url: URL) -> None:
    with pytest.raises(RuntimeError, match="not a setup"):
        asyncio.run(_calibrate_once(db_url, ["no-such-setup"]))
