"""``def`` routes with the sync `Session`: FastAPI runs each one in AnyIO's threadpool.

The code is the blocking setup's, minus ``async``. That one word moves every query off the event
loop onto a worker thread (40 of them by default), so the loop stays free for other requests.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..database import SyncDatabase
from ..models import User, UserCreate, UserOut
from .common import EmailQuery, UserId, email_taken, user_not_found, users_with_email


def make_router(database: SyncDatabase) -> APIRouter:
    router = APIRouter(prefix="/threadpool", tags=["threadpool: sync Session in def"])
    DbSession = Annotated[Session, Depends(database.get_db)]

    @router.get("/users/{user_id}")
    def read_user(user_id: UserId, db: DbSession) -> UserOut:
        user = db.get(User, user_id)
        if user is None:
            raise user_not_found(f"no user with id {user_id}")
        return UserOut.model_validate(user)

    @router.get("/users")
    def find_user(email: EmailQuery, db: DbSession) -> UserOut:
        user = db.scalars(users_with_email(email)).first()
        if user is None:
            raise user_not_found(f"no user with email {email!r}")
        return UserOut.model_validate(user)

    @router.post("/users", status_code=status.HTTP_201_CREATED)
    def create_user(payload: UserCreate, db: DbSession) -> UserOut:
        user = User(**payload.model_dump())
        db.add(user)
        try:
            db.flush()  # the INSERT: a duplicate email fails here, and the new id is known
            # Read the answer before commit() expires `user`. Read after it, `user` reloads in
            # a new transaction that holds a pooled connection until the request ends: under
            # load, requests then wait for connections held by requests waiting for them (until
            # pool_timeout), and a reload that fails answers an error for a row that was saved.
            created = UserOut.model_validate(user)
            db.commit()
        except IntegrityError:
            db.rollback()
            raise email_taken(payload.email) from None
        return created

    return router
