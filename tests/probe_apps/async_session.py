"""Heroes with an `AsyncSession` on aiosqlite: each query is awaited, and the loop runs on."""

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

folder = os.environ.get("PROBE_APPS_DIR") or tempfile.mkdtemp(prefix="probe-apps-")
sqlite_url = f"sqlite+aiosqlite:///{os.path.join(folder, 'async_session.db')}"
engine = create_async_engine(sqlite_url)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Hero(Base):
    __tablename__ = "heroes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with SessionLocal() as session:
        if await session.scalar(select(Hero).limit(1)) is None:
            session.add_all(Hero(name=name) for name in ("Deadpond", "Rusty-Man", "Spider-Boy"))
            await session.commit()
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/heroes/{hero_id}")
async def read_hero(hero_id: int, session: SessionDep) -> dict[str, object]:
    hero = await session.get(Hero, hero_id)
    if not hero:
        raise HTTPException(status_code=404, detail="Hero not found")
    return {"id": hero.id, "name": hero.name}
