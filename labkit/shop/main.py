"""The app: the same API once per session setup, a health check, and clear answers to failures.

Serve it as it is with ``uvicorn labkit.shop.main:app``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import async_session, blocking, threadpool
from .database import async_engine, engine
from .errors import add_error_handlers
from .models import Base


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)  # the tables that do not exist yet
    yield
    engine.dispose()
    await async_engine.dispose()


app = FastAPI(title="Users, three ways", lifespan=lifespan)
add_error_handlers(app)
app.include_router(blocking.router)
app.include_router(threadpool.router)
app.include_router(async_session.router)


@app.get("/health")
async def health() -> dict[str, str]:
    """Touches no database: how long it takes shows how free the event loop is."""
    return {"status": "ok"}
