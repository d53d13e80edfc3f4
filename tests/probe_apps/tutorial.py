"""Heroes, as FastAPI's SQL tutorial writes the app: a sync `Session` dependency, ``def`` routes
to create, list and read heroes. The tutorial writes its models with SQLModel; these are
SQLAlchemy's and Pydantic's, with the same fields, so the lab needs no SQLModel."""

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

folder = os.environ.get("PROBE_APPS_DIR") or tempfile.mkdtemp(prefix="probe-apps-")
sqlite_url = f"sqlite:///{os.path.join(folder, 'tutorial.db')}"
engine = create_engine(sqlite_url, connect_args={"check_same_thread": False})


class Base(DeclarativeBase):
    pass


class Hero(Base):
    __tablename__ = "heroes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    secret_name: Mapped[str] = mapped_column(String(50), default="")
    age: Mapped[int | None] = mapped_column(default=None)


class HeroCreate(BaseModel):
    name: str
    secret_name: str
    age: int | None = None


class HeroPublic(BaseModel):
    id: int
    name: str
    age: int | None = None


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.scalar(select(Hero).limit(1)) is None:
            session.add_all(Hero(name=name) for name in ("Deadpond", "Rusty-Man", "Spider-Boy"))
            session.commit()
    yield


app = FastAPI(lifespan=lifespan)


@app.post("/heroes/")
def create_hero(hero: HeroCreate, session: SessionDep) -> HeroPublic:
    db_hero = Hero(**hero.model_dump())
    session.add(db_hero)
    session.commit()
    session.refresh(db_hero)
    return HeroPublic(id=db_hero.id, name=db_hero.name, age=db_hero.age)


@app.get("/heroes/")
def read_heroes(
    session: SessionDep, offset: int = 0, limit: Annotated[int, Query(le=100)] = 100
) -> list[HeroPublic]:
    heroes = session.scalars(select(Hero).offset(offset).limit(limit))
    return [HeroPublic(id=h.id, name=h.name, age=h.age) for h in heroes]


@app.get("/heroes/{hero_id}")
def read_hero(hero_id: int, session: SessionDep) -> HeroPublic:
    hero = session.get(Hero, hero_id)
    if not hero:
        raise HTTPException(status_code=404, detail="Hero not found")
    return HeroPublic(id=hero.id, name=hero.name, age=hero.age)
