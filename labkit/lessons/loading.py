"""Notebook 04's app: users with their posts' titles, loaded lazily (one more query per user:
the N+1 problem) or with ``selectinload`` (one more query in all).

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from labkit.app.databases import SyncDatabase
from labkit.shop.database import SessionDep, get_db
from labkit.shop.models import User


class AuthorOut(BaseModel):
    """A user and the titles of their posts, the shape a "list authors" page needs."""

    id: int
    name: str
    post_titles: list[str]


Limit = Annotated[int, Query(ge=1, le=1000, description="How many users, by id.")]
authors_router = APIRouter()


def first_users(limit: int) -> Select[User]:
    return select(User).order_by(User.id).limit(limit)


def authors(db: Session, statement: Select[User]) -> list[AuthorOut]:
    return [
        AuthorOut(id=user.id, name=user.name, post_titles=[post.title for post in user.posts])
        for user in db.scalars(statement)
    ]


@authors_router.get("/lazy/authors")
def lazy_authors(db: SessionDep, limit: Limit = 20) -> list[AuthorOut]:
    """Each ``user.posts`` read is a query of its own: the N+1 problem."""
    return authors(db, first_users(limit))


@authors_router.get("/selectin/authors")
def selectin_authors(db: SessionDep, limit: Limit = 20) -> list[AuthorOut]:
    """One query for the users, one ``... WHERE author_id IN (...)`` for all their posts."""
    return authors(db, first_users(limit).options(selectinload(User.posts)))


def author_listing_app(database: SyncDatabase) -> FastAPI:
    """``GET /lazy/authors?limit=N`` (1 + N queries) and ``GET /selectin/authors?limit=N`` (2).

    Both are ``def`` routes on the sync setup and return the same JSON; only the loading differs.
    """
    app = FastAPI(title="Authors and their posts")
    app.include_router(authors_router)
    app.dependency_overrides[get_db] = database.get_db
    return app
