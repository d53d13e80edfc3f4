"""Talk to an app in this process, the way a test or a notebook cell does.

`httpx.ASGITransport` calls the app directly, with no socket, but it does not run the app's
lifespan; `lab_client` does, so the tables exist and the engines are disposed afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

BASE_URL = "http://lab"


@asynccontextmanager
async def lab_client(
    app: FastAPI, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """Start `app` (its lifespan), yield a client bound to it, stop it on the way out.

    By default an error the app raises is raised in the caller too, as a test wants. With
    ``raise_app_exceptions=False`` the client gets whatever the app had sent before the error,
    as a client of a real server does (the error then stays on the server's side).
    """
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client
