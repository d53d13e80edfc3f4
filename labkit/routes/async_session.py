"""``async def`` routes with an `AsyncSession` on an async driver (aiosqlite, asyncpg).

Every query is awaited: while the database works, the event loop serves other requests. The
session factory sets ``expire_on_commit=False``, so the new user can be read after ``commit()``
without an implicit (and, in async code, impossible) reload.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..database import AsyncDatabase
from ..models import User, UserCreate, UserOut
from .common import EmailQuery, UserId, email_taken, user_not_found, users_with_email


def make_router(database: AsyncDatabase) -> APIRouter:
    router = APIRouter(prefix="/async", tags=["async: AsyncSession in async def"])
    DbSession = Annotated[AsyncSession, Depends(database.get_async_db)]

    @router.get("/users/{user_id}")
    async def read_user(user_id: UserId, db: DbSession) -> UserOut:
        user = await db.get(User, user_id)
        if user is None:
            raise user_not_found(f"no user with id {user_id}")
        return UserOut.model_validate(user)

    @router.get("/users")
    async def find_user(email: EmailQuery, db: DbSession) -> UserOut:
        user = (await db.scalars(users_with_email(email))).first()
        if user is None:
            raise user_not_found(f"no user with email {email!r}")
        return UserOut.model_validate(user)

    @router.post("/users", status_code=status.HTTP_201_CREATED)
    async def create_user(payload: UserCreate, db: DbSession) -> UserOut:
        user = User(**payload.model_dump())
        db.add(user)
        try:
            await db.commit()
        except IntegrityError:
            await db.rollback()
            raise email_taken(payload.email) from None
        return UserOut.model_validate(user)

    return router
