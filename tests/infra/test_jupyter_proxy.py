"""The served app where readers are: through Jupyter's proxy, with API docs that need no internet.

`jupyter lab` (on loopback, with a token, jupyter-server-proxy installed) and ``python -m labkit
serve`` on a free port: the app answers at the Jupyter server's ``/proxy/PORT/``, its docs page
and everything the page loads come through it, and a kernel that the Jupyter server runs links
there. Everything a test starts, it stops, and checks that it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from support import JupyterLab, jupyter_lab, refuses_connections

from labkit.app.for_browser import check_docs
from labkit.app.serve import uvicorn_process
from labkit.infra.jupyter_proxy import Address, address_of
from labkit.infra.uvicorn import Server
from labkit.settings import sqlite_url

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    with jupyter_lab(ROOT, tmp_path_factory.mktemp("lab")) as lab:
        yield lab
    assert refuses_connections(urlsplit(lab.base_url).port or 0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """The lab's app in a process of its own on a free port, on a database of its own; gone
    afterwards."""
    with uvicorn_process(sqlite_url(tmp_path / "lab.db")) as server:
        yield server
    assert refuses_connections(server.port)
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == "zombie"


def test_jupyter_proxies_health_and_docs(lab: JupyterLab, server: Server) -> None:
    proxied = f"/proxy/{server.port}"
    health = lab.get(f"{proxied}/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    docs = lab.get(f"{proxied}/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    # the page names its assets under the proxy's prefix, and its schema sends requests there
    schema = lab.get(f"{proxied}/openapi.json").json()
    assert schema["servers"] == [{"url": proxied}]


def test_the_docs_page_loads_everything_from_the_app_through_the_proxy(
    lab: JupyterLab, server: Server
) -> None:
    through = f"{lab.base_url}/proxy/{server.port}"
    check = check_docs(Address(through, through, through, lab.login, "test", through_proxy=True))
    assert check.complete, check
    assert check.elsewhere == []
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"} <= {
        url.rsplit("/", 1)[-1] for url in check.assets
    }
    assert all(url.startswith(f"/proxy/{server.port}/") for url in check.assets), check


def test_the_docs_pages_need_no_cdn(server: Server) -> None:
    """Straight to the app too: Swagger UI's page, and ReDoc's, name no other host."""
    direct = Address(server.url, server.url, server.url, {}, "test", through_proxy=False)
    check = check_docs(direct)
    assert check.complete and check.elsewhere == [], check
    redoc = direct.get("/redoc").text
    assert "https://" not in redoc.replace("https://github.com", ""), redoc


def test_a_kernel_of_the_jupyter_server_links_through_its_proxy(
    lab: JupyterLab, server: Server
) -> None:
    port = server.port
    with lab.kernel() as run:
        printed = run(
            "import json\n"
            "from labkit.infra.jupyter_proxy import address_of\n"
            "from labkit.app.for_browser import check_docs\n"
            f"address = address_of({port})\n"
            "check = check_docs(address)\n"
            "print(json.dumps({'href': address.link('/docs').href, 'proxy': address.through_proxy,"
            " 'how': address.how, 'complete': check.complete}))\n"
        )
    found = json.loads(printed)
    assert found["proxy"] is True, found["how"]
    assert found["href"] == f"/proxy/{port}/docs"
    assert found["complete"] is True


def test_outside_a_jupyter_server_the_link_is_the_loopback_address(server: Server) -> None:
    address = address_of(server.port)
    assert not address.through_proxy
    assert address.link("/docs").href == f"{server.url}/docs"
    assert "no Jupyter server runs this kernel" in address.how
