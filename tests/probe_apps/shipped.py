"""An app as people ship one: a factory, CORS middleware around it, a bearer token on every
route, UUID keys, a POST with a JSON body, a class dependency on an async route, a legacy
route with a sync `Session` in ``async def``, a ``def`` route with the same sync `Session`,
and a route that fails one request in three.

It imports nothing of labkit, and nothing in it is there for the probe.
"""

import itertools
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import String, create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.types import ASGIApp

folder = os.environ.get("PROBE_APPS_DIR") or tempfile.mkdtemp(prefix="probe-apps-")
database = os.path.join(folder, "shipped.db")
engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
legacy_engine = create_engine(f"sqlite:///{database}", connect_args={"check_same_thread": False})
API_TOKEN = os.environ.get("SHIPPED_API_TOKEN", "change-me")
logging.basicConfig(level=logging.INFO)  # as the full-stack FastAPI template does
logger = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(50))


class ItemIn(BaseModel):
    name: str


class ItemOut(BaseModel):
    id: uuid.UUID
    name: str


class LedgerError(Exception):
    """The books do not balance."""


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


def get_legacy_session() -> Iterator[Session]:
    with Session(legacy_engine) as session:
        yield session


bearer = HTTPBearer()


async def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
) -> str:
    if credentials.credentials != API_TOKEN:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Invalid token")
    return "admin"


class Page:
    """?offset=&limit=, as a class: FastAPI calls it with the query's values."""

    def __init__(self, offset: int = 0, limit: int = 10) -> None:
        self.offset, self.limit = offset, min(limit, 100)


SessionDep = Annotated[AsyncSession, Depends(get_session)]
LegacySessionDep = Annotated[Session, Depends(get_legacy_session)]
UserDep = Annotated[str, Depends(current_user)]
PageDep = Annotated[Page, Depends()]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()
    legacy_engine.dispose()


def create_app() -> ASGIApp:
    api = FastAPI(lifespan=lifespan)
    calls = itertools.count(1)

    @api.post("/items", status_code=201)
    async def create_item(item: ItemIn, session: SessionDep, _user: UserDep) -> ItemOut:
        row = Item(name=item.name)
        session.add(row)
        await session.commit()
        logger.info("item %s created", row.id)
        return ItemOut(id=row.id, name=row.name)

    @api.get("/items")
    async def list_items(session: SessionDep, page: PageDep, _user: UserDep) -> list[ItemOut]:
        rows = await session.scalars(
            select(Item).order_by(Item.name).offset(page.offset).limit(page.limit)
        )
        return [ItemOut(id=row.id, name=row.name) for row in rows]

    @api.get("/items/{item_id}")
    async def read_item(item_id: uuid.UUID, session: SessionDep, _user: UserDep) -> ItemOut:
        row = await session.get(Item, item_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Item not found")
        return ItemOut(id=row.id, name=row.name)

    @api.get("/legacy/items/{item_id}")
    async def read_item_legacy(
        item_id: uuid.UUID, session: LegacySessionDep, _user: UserDep
    ) -> ItemOut:
        row = session.get(Item, item_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Item not found")
        return ItemOut(id=row.id, name=row.name)

    @api.get("/reports/{item_id}")
    def read_report(item_id: uuid.UUID, session: LegacySessionDep, _user: UserDep) -> ItemOut:
        row = session.get(Item, item_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Item not found")
        return ItemOut(id=row.id, name=row.name)

    @api.get("/ledger/{item_id}")
    async def read_ledger(item_id: uuid.UUID, session: SessionDep, _user: UserDep) -> ItemOut:
        row = await session.get(Item, item_id)
        if next(calls) % 3 == 0:
            raise LedgerError(f"ledger out of balance for item {item_id}")
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Item not found")
        return ItemOut(id=row.id, name=row.name)

    return CORSMiddleware(api, allow_origins=["*"], allow_headers=["Authorization"])


app = create_app()
