"""The tables, in SQLAlchemy 2.x typed style, and the Pydantic v2 schemas and parameters of the API.

Two tables are enough for every lesson: `User` (looked up by id and by email, created with a
unique email so a duplicate is a real `IntegrityError`) and `Post` (a relationship, so loading
strategies and the N+1 problem have something to load).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints
from sqlalchemy import ForeignKey, String
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAME_MAX = 100
EMAIL_MAX = 254  # the longest address SMTP allows
MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER; a larger id is a 422, not a driver overflow (500)


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base: `Base.metadata` creates every table.

    `AsyncAttrs` gives every model `awaitable_attrs`, so async code can await a lazy read
    (``await user.awaitable_attrs.posts``) where a plain ``user.posts`` raises `MissingGreenlet`.
    """


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)
    posts: Mapped[list[Post]] = relationship(back_populates="author", order_by="Post.id")

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, name={self.name!r}, email={self.email!r})"


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    author: Mapped[User] = relationship(back_populates="posts")

    def __repr__(self) -> str:
        return f"Post(id={self.id!r}, author_id={self.author_id!r}, title={self.title!r})"


def no_control_characters(text: str) -> str:
    """Refuse text with control characters (NUL, newline inside, escape codes ...) with a 422.

    A name or an email is one line of text. NUL matters most: SQLite stores it, but PostgreSQL
    cannot hold it in a text column at all, so the driver would fail the INSERT or the lookup
    and a client's bad input would become the server's 500.
    """
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ValueError("must not contain control characters")
    return text


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(no_control_characters),
]


class UserCreate(BaseModel):
    """What a client sends to create a user; anything else is a 422, never a 500."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    email: Annotated[EmailStr, Field(max_length=EMAIL_MAX)]


class UserOut(BaseModel):
    """What every setup returns for a user: identical JSON whichever session served it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str


UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]
EmailQuery = Annotated[
    str,
    Query(min_length=1, max_length=EMAIL_MAX, description="Exact email."),
    AfterValidator(no_control_characters),
]
