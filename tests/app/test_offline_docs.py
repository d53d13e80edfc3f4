"""The lab's app serves its API docs pages from installed files, under a proxy's prefix too.

FastAPI's own ``/docs`` loads Swagger UI from a CDN: blank on a machine without internet. The lab's
app (`create_app`) serves it, and ReDoc, from fastapi-offline's files; `ProxyPrefix` makes the
page's links follow a proxy that serves the app under a path (Jupyter's ``/proxy/PORT/``).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from labkit.app.client import lab_client
from labkit.app.create import LabApp
from labkit.app.for_browser import page_assets
from labkit.infra.jupyter_proxy import ProxyPrefix
from labkit.shop.main import app as shop_app

pytestmark = pytest.mark.anyio

PREFIX = "/user/reader/proxy/8000"


def test_page_assets_are_what_a_browser_loads_as_the_page_opens() -> None:
    page = """<link rel="stylesheet" href="https://cdn.example/ui.css">
    <link rel="shortcut icon" href="/static/favicon.png"><script src="/static/ui.js"></script>
    <script>const ui = SwaggerUIBundle({ url: '/openapi.json', "dom_id": "#ui" })</script>"""
    assert page_assets(page) == [
        "https://cdn.example/ui.css",
        "/static/favicon.png",
        "/static/ui.js",
        "/openapi.json",
    ]


async def test_the_shop_app_loads_its_docs_from_a_cdn() -> None:
    """Why the lab's copy serves its own: the app as FastAPI makes it needs the internet."""
    transport = httpx.ASGITransport(shop_app)  # no lifespan: no tables made anywhere
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        page = await client.get("/docs")
    assert [url for url in page_assets(page.text) if urlsplit(url).netloc]


@pytest.mark.parametrize("docs", ["/docs", "/redoc"])
async def test_docs_and_all_they_load_come_from_the_app(
    make_app: Callable[..., LabApp], docs: str
) -> None:
    async with lab_client(make_app()) as client:
        page = await client.get(docs)
        assets = page_assets(page.text)
        assert page.status_code == 200 and len(assets) >= 2, page.text
        assert [url for url in assets if urlsplit(url).netloc] == []
        for url in assets:
            assert (await client.get(url)).status_code == 200, url


async def test_behind_a_proxy_the_docs_link_under_its_prefix(
    make_app: Callable[..., LabApp],
) -> None:
    app = make_app()
    app.fastapi.add_middleware(ProxyPrefix)
    proxy = {"X-Forwarded-Prefix": PREFIX}  # what jupyter-server-proxy sends; it strips PREFIX
    async with lab_client(app) as client:
        page = await client.get("/docs", headers=proxy)
        assets = page_assets(page.text)
        assert assets and all(url.startswith(f"{PREFIX}/") for url in assets), assets
        for url in assets:  # as the browser asks the proxy, and the proxy asks the app
            forwarded = await client.get(url.removeprefix(PREFIX), headers=proxy)
            assert forwarded.status_code == 200, url
        schema = (await client.get("/openapi.json", headers=proxy)).json()
        assert schema["servers"] == [{"url": PREFIX}]  # "Try it out" goes through the proxy
        user = await client.get("/async/users/1", headers=proxy)
        assert user.status_code == 200 and user.json()["id"] == 1
        assert "servers" not in (await client.get("/openapi.json")).json()  # without, as before
