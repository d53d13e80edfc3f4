"""The lab's app in a process of its own, started from a notebook for your browser, and
a check that its API docs load from the app alone.

A cell that starts a server to click on cannot hold it in a ``with`` block: the block would end
with the cell. `serve_for_browser` keeps it running after the cell and stops the one it started
before (a cell run twice leaves one server, not two); a kernel that ends, even killed, stops it
too (`uvicorn_process` leaves that to the reaper); ``.stop()`` ends it by hand.

The docs page is Swagger UI. FastAPI's own page loads it from a CDN, blank without internet; the
lab's app serves it from files installed with the fastapi-offline package. `check_docs` fetches
the page the way your browser gets it, then every script, stylesheet, icon and the
OpenAPI schema the page names, and says where each came from.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from sqlalchemy.engine import URL

from labkit.app.databases import EngineOptions
from labkit.app.serve import uvicorn_process
from labkit.infra.jupyter_proxy import Address, Link, address_of
from labkit.infra.uvicorn import Server

DOCS = "/docs"
SCHEMA_IN_PAGE = re.compile(r"""\burl:\s*['"]([^'"]+)['"]""")
"""Where the page's script names the OpenAPI schema it loads: ``url: '/openapi.json'``."""


class _Assets(HTMLParser):
    """The URLs a page loads by itself: ``<script src>``, ``<link href>``, ``<img src>``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def page_assets(html: str) -> list[str]:
    """Every URL the docs page loads as it opens: its assets, then the schema its script asks
    for, as the page writes them."""
    parser = _Assets()
    parser.feed(html)
    return parser.urls + SCHEMA_IN_PAGE.findall(html)


@dataclass(frozen=True)
class DocsCheck:
    """The docs page and what it loads: each URL as the page names it, with its status (None:
    not fetched, since it is on another host)."""

    page: str
    status: int
    assets: dict[str, int | None]

    @property
    def elsewhere(self) -> list[str]:
        """Assets on another host: a CDN, which a machine without internet cannot reach."""
        return [url for url, status in self.assets.items() if status is None]

    @property
    def complete(self) -> bool:
        """The page and everything it loads came from the app, each with a 200."""
        return self.status == 200 and bool(self.assets) and set(self.assets.values()) == {200}


def check_docs(address: Address) -> DocsCheck:
    """Fetch the docs page by `address`, then every asset it names, resolved as a browser does,
    from the same host; assets on another host are listed, not fetched."""
    page = address.get(DOCS)
    assets: dict[str, int | None] = {}
    for url in page_assets(page.text):
        if urlsplit(url).netloc:
            assets[url] = None
        else:
            assets[url] = address.get(urljoin(str(page.url), url)).status_code
    return DocsCheck(address.text + DOCS, page.status_code, assets)


@dataclass(frozen=True)
class BrowserServer:
    """The lab's app under uvicorn, for your browser: where it listens, how the browser
    reaches it (`address`), and its docs page's link."""

    server: Server
    address: Address

    @property
    def docs(self) -> Link:
        return self.address.link(DOCS)

    def stop(self) -> None:
        """Stop it now (it stops anyway when the kernel does)."""
        stop_for_browser()


_running = ExitStack()


def serve_for_browser(
    database_url: str | URL, options: EngineOptions | None = None
) -> BrowserServer:
    """Start the lab's app with `options` (`uvicorn_process`) on a free port, after stopping the
    one this function started before, and work out how your browser reaches it
    (`address_of`)."""
    stop_for_browser()
    server = _running.enter_context(uvicorn_process(database_url, options))
    return BrowserServer(server, address_of(server.port))


def stop_for_browser() -> None:
    """Stop the server `serve_for_browser` started, if it runs."""
    _running.close()
