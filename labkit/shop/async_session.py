"""``async def`` routes with an `AsyncSession` on an async driver (aiosqlite, asyncpg).

Every query is awaited: while the database works, the event loop serves other requests. The
session factory sets ``expire_on_commit=False``, so the new user can be read after ``commit()``
without an implicit (and, in async code, impossible) reload.
"""

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .database import AsyncSessionDep
from .models import EmailQuery, User, UserCreate, UserId, UserOut

router = APIRouter(prefix="/async", tags=["async: AsyncSession in async def"])


@router.get("/users/{user_id}")
async def read_user(user_id: UserId, db: AsyncSessionDep) -> UserOut:
    user = await db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    return UserOut.model_validate(user)


@router.get("/users")
async def find_user(email: EmailQuery, db: AsyncSessionDep) -> UserOut:
    user = (await db.scalars(select(User).where(User.email == email))).first()
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with email {email!r}")
    return UserOut.model_validate(user)


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(payload: UserCreate, db: AsyncSessionDep) -> UserOut:
    user = User(**payload.model_dump())
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise HTTPException(
            status_code=409, detail=f"a user with email {payload.email!r} exists"
        ) from None
    return UserOut.model_validate(user)
