"""Notebook 05's read that gives its connection back before it returns.

`connection_release_app` serves the threadpool setup's routes (the session, and its pooled
connection, closed by the dependency after the response), beside a read that closes the session
before it returns. FastAPI validates a ``def`` route's answer in a worker thread, so the first
can run out of threads while holding every connection.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

from fastapi import APIRouter, FastAPI, HTTPException

from labkit.app.databases import SyncDatabase
from labkit.lessons.timeline import lesson_lifespan
from labkit.shop import threadpool
from labkit.shop.database import SessionDep, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import User, UserId, UserOut

released_router = APIRouter()


@released_router.get("/released/users/{user_id}")
def read_user_released(user_id: UserId, db: SessionDep) -> UserOut:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user with id {user_id}")
    answer = UserOut.model_validate(user)
    db.close()  # the connection goes back now, not after the response
    return answer


def connection_release_app(database: SyncDatabase, *, threads: int | None = None) -> FastAPI:
    """The threadpool setup's routes (``/threadpool/...``) and ``GET /released/users/{id}``.

    Both reads go through the ``get_db`` dependency, on one pool. ``/threadpool/users/{id}``
    returns and leaves the closing to the dependency, which FastAPI runs after the response, so
    the connection stays checked out while FastAPI validates the answer in a worker thread.
    ``/released/users/{id}`` closes the session once the answer is built, so the connection is
    back in the pool before that second trip to the threadpool. `threads` sets AnyIO's thread
    limiter while the app runs; an exhausted pool answers 503, as in the main app. The caller
    creates the tables and disposes `database`.
    """
    app = FastAPI(
        title="When a connection goes back to the pool", lifespan=lesson_lifespan(None, threads)
    )
    add_error_handlers(app)
    app.include_router(threadpool.router)
    app.include_router(released_router)
    app.dependency_overrides[get_db] = database.get_db
    return app
