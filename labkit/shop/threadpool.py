"""``def`` routes with the sync `Session`: FastAPI runs each one in AnyIO's threadpool.

The code is the blocking setup's, minus ``async``. That one word moves every query off the event
loop onto a worker thread (40 of them by default), so the loop stays free for other requests.
"""

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .database import SessionDep
from .models import EmailQuery, User, UserCreate, UserId, UserOut

router = APIRouter(prefix="/threadpool", tags=["threadpool: sync Session in def"])


@router.get("/users/{user_id}")
def read_user(user_id: UserId, db: SessionDep) -> UserOut:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    return UserOut.model_validate(user)


@router.get("/users")
def find_user(email: EmailQuery, db: SessionDep) -> UserOut:
    user = db.scalars(select(User).where(User.email == email)).first()
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with email {email!r}")
    return UserOut.model_validate(user)


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(payload: UserCreate, db: SessionDep) -> UserOut:
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
