"""The probe's parts one at a time, with no load: the options as curl spells them, importing
as uvicorn does, serving through a wrapper, the app's exceptions, who runs in worker threads."""

from __future__ import annotations

import uuid
from array import array
from collections import Counter
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from labkit.__main__ import build_parser
from labkit.bench.results import LoadResult
from labkit.instruments.watch import LagTrace
from labkit.probe.app_import import ProbeError, import_app
from labkit.probe.cost import probe_cost
from labkit.probe.request import (
    ProbeRequest,
    RequestOptionError,
    body,
    checked_path,
    header,
    parameter_values,
)
from labkit.probe.serving import served
from labkit.probe.thread_users import runs_in_thread, threaded_calls


def test_options_read_as_curl_reads_them(tmp_path: Path) -> None:
    assert header("Authorization: Bearer a:b") == ("Authorization", "Bearer a:b")
    with pytest.raises(RequestOptionError, match="a header such as"):
        header("Authorization Bearer x")
    (tmp_path / "body.json").write_text('{"name": "Widget"}')
    assert body(f"@{tmp_path / 'body.json'}") == b'{"name": "Widget"}'
    assert body("plain") == b"plain"
    with pytest.raises(RequestOptionError, match="cannot read"):
        body(f"@{tmp_path / 'missing.json'}")
    (tmp_path / "ids.txt").write_text("a1\n\n b2 \n")
    assert parameter_values(f"item_id=@{tmp_path / 'ids.txt'}") == ("item_id", ("a1", "b2"))
    assert parameter_values("n=3, 5,8") == ("n", ("3", "5", "8"))
    for wrong in ("item_id", "9x=1", "item_id="):
        with pytest.raises(RequestOptionError):
            parameter_values(wrong)
    assert checked_path("/items/{item_id}/tags/{tag}") == "/items/{item_id}/tags/{tag}"
    for wrong in ("items", "/items/{item-id}", "/items/{"):
        with pytest.raises(RequestOptionError, match="a path such as"):
            checked_path(wrong)


def test_each_parameter_cycles_through_its_values_and_the_rest_through_ids() -> None:
    key = str(uuid.UUID(int=7))
    request = ProbeRequest(values={"item_id": (key, "a b")}, ids=2)
    path_of = request.path_of("/shops/{shop}/items/{item_id}")
    assert [path_of(i) for i in range(3)] == [
        f"/shops/1/items/{key}",
        "/shops/2/items/a%20b",  # quoted, as a client must
        f"/shops/1/items/{key}",
    ]
    assert request.describe(["/shops/{shop}/items/{item_id}"]) == (
        f"{{shop}} = 1..2; {{item_id}} = {key}, a b"
    )
    assert request.unused_values(["/items"]) == ["item_id"]
    assert ProbeRequest().path_of("/health")(5) == "/health"


def test_the_command_line_spells_the_request_as_curl_does() -> None:
    from labkit.__main__ import _probe_request

    parser = build_parser()
    posted = _probe_request(
        parser.parse_args(["probe", "m:app", "--path", "/items", "--json", "{}", "-H", "X-A: 1"])
    ).sent
    assert posted.method == "POST" and posted.body == b"{}"
    assert posted.headers == (
        ("X-A", "1"), ("Content-Type", "application/json"), ("Accept", "application/json")
    )  # fmt: skip
    put = _probe_request(parser.parse_args(["probe", "m:app", "--path", "/x", "-X", "put"])).sent
    assert (put.method, put.body, put.headers) == ("PUT", None, ())


def test_probe_help_gives_every_option_an_example() -> None:
    parser = build_parser()
    probe = parser._subparsers._group_actions[0].choices["probe"]  # type: ignore[union-attr]
    for action in probe._actions:
        if action.dest == "help":
            continue
        spelled = action.option_strings or ["main:app"]
        assert any(name in (action.help or "") for name in spelled), action.dest
    assert "examples:" in probe.format_help()


def _plain_function() -> None:
    """Not an app, and not a factory either."""


def test_import_app_finds_a_wrapped_app_and_calls_a_factory(tmp_path: Path) -> None:
    wrapped = import_app("tests.probe_apps.shipped:app")
    assert isinstance(wrapped, CORSMiddleware)
    made = import_app("tests.probe_apps.shipped:create_app", factory=True)
    assert isinstance(made, CORSMiddleware) and made is not wrapped
    with pytest.raises(ProbeError, match="if it builds the app, --factory"):
        import_app("tests.probe.test_probe_parts:_plain_function")
    (tmp_path / "labkit_probe_app_dir.py").write_text("app = None\n")
    with pytest.raises(ProbeError, match=r"not an ASGI app \(type NoneType\)"):
        import_app("labkit_probe_app_dir:app", tmp_path)


class Pagination:
    def __init__(self, offset: int = 0) -> None:
        self.offset = offset


def sync_dependency() -> int:
    return 1


async def async_dependency(page: Annotated[Pagination, Depends()]) -> int:
    return page.offset


@pytest.mark.anyio
async def test_thread_users_are_named_from_the_route_each_request_took() -> None:
    """Through middleware and an included router with a prefix, as FastAPI routes them."""
    api, router = FastAPI(), APIRouter(prefix="/items")

    @router.get("/{n}")
    async def all_async(n: int, one: Annotated[int, Depends(async_dependency)]) -> int:
        return n + one

    @router.get("/")
    def sync_route(one: Annotated[int, Depends(sync_dependency)]) -> int:
        return one

    api.include_router(router, prefix="/api")
    assert runs_in_thread(Pagination) and runs_in_thread(sync_dependency)
    assert not runs_in_thread(async_dependency)
    async with served(CORSMiddleware(api, allow_origins=["*"])) as seen:
        for path in ("/api/items/3", "/api/items/", "/nowhere"):
            await seen.client.get(path)
    assert threaded_calls(seen.routes["GET", "/api/items/3"]) == ["dependency Pagination (class)"]
    assert threaded_calls(seen.routes["GET", "/api/items/"]) == [
        "route sync_route (def)",
        "dependency sync_dependency (def)",
    ]
    assert threaded_calls(seen.routes.get(("GET", "/nowhere"))) == []


@pytest.mark.anyio
async def test_served_runs_the_lifespan_through_the_wrapper_and_keeps_the_apps_exceptions(
    probe_apps_dir: Path,
) -> None:
    app = import_app("tests.probe_apps.shipped:create_app", factory=True)
    token = {"Authorization": "Bearer change-me"}
    async with served(app) as seen:
        client, errors = seen.client, seen.errors
        made = await client.post("/items", json={"name": "Widget"}, headers=token)
        assert made.status_code == 201, made.text  # the table exists: the lifespan ran
        item = made.json()["id"]
        answers = [(await client.get(f"/ledger/{item}", headers=token)).status_code for _ in "abc"]
        refused = await client.get("/items", headers={"Authorization": "Bearer wrong"})
    assert answers == [200, 200, 500]
    assert refused.status_code == 401
    ((said, count),) = errors.counts.items()
    assert said == f"LedgerError: ledger out of balance for item {item}" and count == 1
    kept = errors.tracebacks[said]
    assert "the app's frames only" in kept and "shipped.py" in kept
    assert "site-packages" not in kept and "raise LedgerError" in kept


@pytest.mark.anyio
async def test_the_probes_own_cpu_is_its_clients_per_request_and_its_watches_per_second() -> None:
    cost = await probe_cost({1: 20, 5: 20}, ProbeRequest())
    assert set(cost.client_ms) == {1, 5}
    assert all(ms > 0 for ms in cost.client_ms.values())
    assert cost.watches_ms_per_s > 0  # a wake-up every millisecond is not free
    run = LoadResult(
        setup="/p", concurrency=5, requests=100, latency_ms=0.0, elapsed_s=2.0, cpu_s=0.5,
        response_times_s=array("d"), server_total_s=array("d"), server_db_s=array("d"),
        statuses=Counter({200: 100}), errors=Counter(), reasons=Counter(), lag=LagTrace(0.001),
    )  # fmt: skip
    watches = cost.watches_ms_per_s * 2.0 / 100  # two seconds of watching, over 100 requests
    assert cost.watches_ms(run) == pytest.approx(watches)
    assert cost.per_request_ms(run) == pytest.approx(cost.client_ms[5] + watches)
