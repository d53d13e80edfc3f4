"""Heroes, as FastAPI's SQL tutorial writes the app: a sync `Session` dependency, ``def`` routes."""

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
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


@app.get("/heroes/{hero_id}")
def read_hero(hero_id: int, session: SessionDep) -> dict[str, object]:
    hero = session.get(Hero, hero_id)
    if not hero:
        raise HTTPException(status_code=404, detail="Hero not found")
    return {"id": hero.id, "name": hero.name}
