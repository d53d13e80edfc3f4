"""A server the lab starts, in your browser, wherever the notebook runs.

A server on 127.0.0.1 answers browsers on the same machine only. On Binder (any JupyterHub), the
kernel runs in a container far from your browser, and the one door into the container
is the Jupyter server the browser already talks to. jupyter-server-proxy (in requirements.txt)
opens it: ``{base_url}proxy/PORT/...`` on the Jupyter server is forwarded to ``127.0.0.1:PORT``,
behind the Jupyter server's own login. Locally the same link works too.

Two halves:

- the app's side, `ProxyPrefix`: the proxy strips ``/proxy/PORT`` from the path and names it in
  ``X-Forwarded-Prefix``; the middleware makes it the request's ``root_path``, which FastAPI
  builds the docs page's links and OpenAPI's ``servers`` from (else Swagger UI asks the Jupyter
  server, not the app, for ``/openapi.json``, and "Try it out" misses the app too);
- the kernel's side, `address_of`: finds the Jupyter server that runs this kernel (its runtime
  file, asked which kernels it runs) and checks that the proxy reaches the port; the link goes
  through it if so, to the loopback address if not, and says which and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Protocol

import httpx
import psutil
from starlette.types import ASGIApp, Receive, Scope, Send

from labkit.infra.ports import LOOPBACK
from labkit.settings import HUB_PREFIX, lab_settings

PREFIX_HEADER = b"x-forwarded-prefix"


class ProxyPrefix:
    """ASGI middleware: a request that a proxy forwarded from under a prefix gets the prefix as
    its ``root_path``, as if the server had been started with it (``uvicorn --root-path``).

    The lab's server listens on loopback only, where any client that can send the header could
    as well reach the app directly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            named = (value for name, value in scope["headers"] if name == PREFIX_HEADER)
            prefix = next(named, b"").decode("latin-1")
            if prefix.startswith("/"):
                # ASGI's path includes the root path (Starlette's routing strips it again),
                # as uvicorn's own --root-path sets both
                root = scope.get("root_path", "") + prefix.rstrip("/")
                scope = {**scope, "root_path": root, "path": root + scope["path"]}
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class JupyterServer:
    """A Jupyter server, as its runtime file describes it: where it listens (`url` ends with its
    `base_url`) and the token its API asks for."""

    url: str
    base_url: str
    token: str

    def headers(self) -> dict[str, str]:
        """What logs a request in: the token, if the server asks for one."""
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def get(self, path: str) -> httpx.Response:
        """GET `path` (after the base URL, no leading slash), logged in."""
        return httpx.get(self.url + path, headers=self.headers(), timeout=5)


class _Printer(Protocol):
    """What IPython's pretty printer offers `Link._repr_pretty_` (its own type is unannotated)."""

    def text(self, obj: str) -> None: ...


@dataclass(frozen=True)
class Link:
    """What a reader clicks (`href`), what it shows (`text`) and why it goes there (`how`)."""

    href: str
    text: str
    how: str

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return (
            f'<a href="{escape(self.href)}" target="_blank" rel="noopener">{escape(self.text)}'
            f"</a><br><small>{escape(self.how)}</small>"
        )

    def _repr_pretty_(self, printer: _Printer, cycle: bool) -> None:
        printer.text(f"{self.text}\n{self.how}")


@dataclass(frozen=True)
class Address:
    """Where a reader's browser reaches a server on a loopback port, and how this kernel gets
    there the same way: `href` and `text` start its links, `fetch` and `headers` its requests."""

    href: str
    text: str
    fetch: str
    headers: dict[str, str]
    how: str
    through_proxy: bool

    def link(self, path: str = "/") -> Link:
        return Link(self.href + path, self.text + path, self.how)

    def get(self, path: str) -> httpx.Response:
        """GET `path` on the server by this address (a path after it, or a whole URL)."""
        url = path if "://" in path else self.fetch + path
        return httpx.get(url, headers=self.headers, timeout=10)


def this_kernel_id() -> str | None:
    """The id of the kernel this code runs in (its connection file is named after it), or None
    outside a kernel."""
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).name
    except (ImportError, RuntimeError, AttributeError, KeyError):
        return None
    found = re.fullmatch(r"kernel-(.+)\.json", name)
    return found[1] if found else None


def running_servers() -> list[JupyterServer]:
    """The Jupyter servers of this user whose process still runs (their runtime files)."""
    from jupyter_core.paths import jupyter_runtime_dir

    servers = []
    for file in sorted(Path(jupyter_runtime_dir()).glob("jpserver-*.json")):
        try:
            info = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(info.get("pid", -1)) and "url" in info:
            token = info.get("token") or lab_settings().hub_token
            servers.append(JupyterServer(info["url"], info.get("base_url", "/"), token))
    return servers


def this_kernels_server() -> JupyterServer | None:
    """The Jupyter server that runs this kernel: the one whose ``/api/kernels`` lists it."""
    kernel = this_kernel_id()
    if kernel is None:
        return None
    for server in running_servers():
        try:
            kernels = server.get("api/kernels").json()
        except (httpx.HTTPError, ValueError):
            continue
        if any(isinstance(k, dict) and k.get("id") == kernel for k in kernels):
            return server
    return None


def address_of(port: int) -> Address:
    """How your browser reaches the server at 127.0.0.1:`port`.

    Through the proxy of the Jupyter server that runs this kernel, once a request through it
    reached the port; on JupyterHub (Binder), through the prefix the hub names; else the
    loopback address, with the reason.
    """
    direct = f"http://{LOOPBACK}:{port}"
    server = this_kernels_server()
    if server is not None:
        proxied = f"proxy/{port}"
        try:
            reached = server.get(f"{proxied}/health").status_code == 200
        except httpx.HTTPError:
            reached = False
        if reached:
            how = (
                f"through the proxy of the Jupyter server that runs this kernel "
                f"({server.base_url}{proxied}/): the link opens wherever that server's pages "
                "open, Binder included"
            )
            return Address(
                server.base_url + proxied,
                server.url + proxied,
                server.url + proxied,
                server.headers(),
                how,
                through_proxy=True,
            )
        how = (
            f"the loopback address: the Jupyter server at {server.url} runs this kernel but "
            f"did not reach port {port} through {server.base_url}{proxied}/ (is "
            "jupyter-server-proxy installed? `pip install -r requirements.txt`, then restart "
            "JupyterLab); it opens only in a browser on this machine"
        )
    elif prefix := lab_settings().hub_prefix:
        href = f"{prefix.rstrip('/')}/proxy/{port}"
        how = f"through the proxy of this JupyterHub server ({HUB_PREFIX} = {prefix})"
        return Address(href, href, direct, {}, how, through_proxy=True)
    else:
        how = (
            "the loopback address: no Jupyter server runs this kernel (a terminal, nbval, or "
            "an editor's own kernel); it opens in a browser on this machine"
        )
    return Address(direct, direct, direct, {}, how, through_proxy=False)
