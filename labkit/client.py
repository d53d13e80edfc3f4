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
async def lab_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start `app` (its lifespan), yield a client bound to it, stop it on the way out."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client
