"""``async def`` routes with the sync `Session`: every query runs on, and blocks, the event loop.

This is the setup the "never use a sync session in async code" advice is about. While a query
runs, the loop can do nothing else: no other request, not even ``/health``, makes progress.
"""

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .database import SessionDep
from .models import EmailQuery, User, UserCreate, UserId, UserOut

router = APIRouter(prefix="/blocking", tags=["blocking: sync Session in async def"])


@router.get("/users/{user_id}")
async def read_user(user_id: UserId, db: SessionDep) -> UserOut:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    return UserOut.model_validate(user)


@router.get("/users")
async def find_user(email: EmailQuery, db: SessionDep) -> UserOut:
    user = db.scalars(select(User).where(User.email == email)).first()
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with email {email!r}")
    return UserOut.model_validate(user)


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(payload: UserCreate, db: SessionDep) -> UserOut:
    user = User(**payload.model_dump())
    db.add(user)
    try:
        db.flush()  # the INSERT: a duplicate email fails here, and the new id is known
        # Read the answer before commit() expires `user`. Read after it, `user` reloads in a new
        # transaction that holds a pooled connection until the request ends: under load,
        # requests then wait for connections held by requests waiting for them (until
        # pool_timeout), and a reload that fails answers an error for a row that was saved.
        created = UserOut.model_validate(user)
        db.commit()
    except IntegrityError:
        db.rollback()
        raise HTTPException(
            status_code=409, detail=f"a user with email {payload.email!r} exists"
        ) from None
    return created
