"""How many sessions one request's code really gets: FastAPI's dependency cache, and
`scoped_session`.

- `dependency_cache_app`: a ``get_current_user`` dependency that takes ``SessionDep``, as the
  route does. FastAPI solves a dependency once per request and hands the same value to everyone
  who asks, so both get one session, and the request holds one pooled connection. The cache
  keeps the *first* value solved for a key (``if key not in dependency_cache`` in
  ``fastapi/dependencies/utils.py``), and the key is the function, its security scopes and its
  dependency scope. Declared with ``Depends(get_db, use_cache=False)``, or with
  ``Depends(get_db, scope="function")`` beside a plain ``SessionDep``, the dependency gets a
  session of its own: two sessions, two connections per request, and the pool runs out at half
  the clients.
- `scoped_session_app`: the registry older apps (and Flask-SQLAlchemy 2.x) use, one session per
  *thread*, looked up with ``ScopedSession()`` wherever it is needed. (Flask-SQLAlchemy 3.0 keys
  its registry by Flask's application context instead, one per request.) FastAPI serves ``def``
  routes on a pool of worker threads that outlive requests, and runs a sync dependency's code
  before and after ``yield`` as trips of their own to that pool, so a thread is not a request.

No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies at runtime.
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session, scoped_session

from labkit.app.databases import SyncDatabase
from labkit.instruments.ledger import LedgerSession
from labkit.lessons.lifecycle.request_steps import FunctionScopedSessionDep
from labkit.shop.database import SessionDep, get_db
from labkit.shop.errors import add_error_handlers
from labkit.shop.models import Post, User, UserCreate, UserOut

# Dependency caching -------------------------------------------------------------------------

SignedIn = Annotated[int, Query(ge=1, description="Who is asking (a token's stand-in).")]


class MyPosts(BaseModel):
    """The signed-in user's post titles, and whether the route saw the dependency's session."""

    name: str
    titles: list[str]
    one_session: bool
    route_session: int
    """The number of the route's session in its ledger: which `get_db` call made it."""
    user_session: int
    """The same for the session the user was read through."""


def session_number(session: Session | None) -> int:
    """A session's number in its ledger (1, 2, ...): the order in which `get_db` made it.

    The lab's apps get their sessions from `SyncDatabase.get_db`, whose sessions count
    themselves; so within one request, on a ledger no one else uses meanwhile, the lowest
    number is the first call of `get_db`."""
    if not isinstance(session, LedgerSession):
        raise TypeError(f"not a session of the lab's ledger: {session!r}")
    return session.number


def get_current_user(db: SessionDep, user_id: SignedIn) -> User:
    """The signed-in user, read through the request's session (the one the route gets too)."""
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="no such user")
    return user


OwnSessionDep = Annotated[Session, Depends(get_db, use_cache=False)]


def get_current_user_own_session(db: OwnSessionDep, user_id: SignedIn) -> User:
    """The same, through a session of its own: ``use_cache=False`` runs `get_db` once more."""
    return get_current_user(db, user_id)


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentUserOwnSession = Annotated[User, Depends(get_current_user_own_session)]

cache_router = APIRouter()


def my_posts(user: User, db: Session) -> MyPosts:
    titles = db.scalars(select(Post.title).where(Post.author_id == user.id).order_by(Post.id))
    return MyPosts(
        name=user.name,
        titles=list(titles),
        one_session=object_session(user) is db,
        route_session=session_number(db),
        user_session=session_number(object_session(user)),
    )


@cache_router.get("/cached/my/posts")
def my_posts_cached(user: CurrentUser, db: SessionDep) -> MyPosts:
    return my_posts(user, db)


@cache_router.get("/uncached/my/posts")
def my_posts_uncached(db: SessionDep, user: CurrentUserOwnSession) -> MyPosts:
    return my_posts(user, db)


@cache_router.get("/uncached-first/my/posts")
def my_posts_uncached_first(user: CurrentUserOwnSession, db: SessionDep) -> MyPosts:
    """The same, with the user declared first. FastAPI solves the parameters in that order, so
    the user's `get_db` is the request's first: it runs, and since nothing is cached for `get_db`
    yet, FastAPI caches its session (``use_cache=False`` only skips the *lookup*). `db` then
    finds that session in the cache: one session, shared."""
    return my_posts(user, db)


class WhichSessions(BaseModel):
    """Which call of `get_db` made each parameter's session (1: the request's first call)."""

    before: int
    own: int
    after: int


@cache_router.get("/first-or-latest/sessions")
def first_or_latest(before: SessionDep, own: OwnSessionDep, after: SessionDep) -> WhichSessions:
    """`get_db` runs for `before`, then again for `own` (``use_cache=False``); `after` is handed
    what the cache kept: the first call's session, or the latest's."""
    first = min(session_number(session) for session in (before, own, after))
    return WhichSessions(
        before=session_number(before) - first + 1,
        own=session_number(own) - first + 1,
        after=session_number(after) - first + 1,
    )


def get_current_user_function_scope(db: FunctionScopedSessionDep, user_id: SignedIn) -> User:
    """`get_current_user`, through the session declared with ``scope="function"``."""
    return get_current_user(db, user_id)


CurrentUserFunctionScope = Annotated[User, Depends(get_current_user_function_scope)]


@cache_router.get("/mixed-scope/my/posts")
def my_posts_mixed_scope(user: CurrentUser, db: FunctionScopedSessionDep) -> MyPosts:
    """The route asks for ``Depends(get_db, scope="function")``, its user dependency for the
    plain `SessionDep`, as the full-stack template's ``CurrentUser`` does. FastAPI's cache key
    holds the scope, so these are two keys: `get_db` runs twice, two sessions."""
    return my_posts(user, db)


@cache_router.get("/function-scope/my/posts")
def my_posts_function_scope(
    user: CurrentUserFunctionScope, db: FunctionScopedSessionDep
) -> MyPosts:
    """The fix: one declaration of the session dependency, used by the route and by the user's
    dependency alike, so one key, one session."""
    return my_posts(user, db)


def dependency_cache_app(database: SyncDatabase) -> FastAPI:
    """``GET /cached/my/posts?user_id=N`` (one session per request),
    ``GET /uncached/my/posts?user_id=N`` (two: the route's, then the user's own),
    ``GET /uncached-first/my/posts?user_id=N`` (the user's own first, which the route then gets),
    ``GET /mixed-scope/my/posts?user_id=N`` (two: one per dependency scope) and
    ``GET /function-scope/my/posts?user_id=N`` (one: ``scope="function"`` on both sides); and
    ``GET /first-or-latest/sessions``, which says which call of `get_db` each of three
    parameters got.

    The posts routes read the user, then their posts, and answer whether the user object
    belongs to the route's session (``one_session``) and the ledger numbers of both sessions.
    An exhausted pool answers 503, as in the main app.
    """
    app = FastAPI(title="One session per request, or two")
    add_error_handlers(app)
    app.include_router(cache_router)
    app.dependency_overrides[get_db] = database.get_db
    return app


# scoped_session -----------------------------------------------------------------------------

ScopedSession: scoped_session[Session]
"""The program's one registry: ``ScopedSession()`` is the calling thread's session.

An app writes ``ScopedSession = scoped_session(SessionLocal)`` once, at import; here
`scoped_session_app` makes it, so that each app the lab builds starts with an empty registry
on its own database.
"""

scoped_router = APIRouter()


CLOSED_DOMAIN = "closed.example"
"""Sign-ups from this domain are refused, by a rule checked after the user was added."""


def add_user(session: Session, payload: UserCreate) -> UserOut:
    user = User(**payload.model_dump())
    session.add(user)
    if payload.email.endswith("@" + CLOSED_DOMAIN):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{CLOSED_DOMAIN} cannot sign up")
    session.commit()
    return UserOut.model_validate(user)


@scoped_router.post("/scoped/users", status_code=status.HTTP_201_CREATED)
def create_user_scoped(payload: UserCreate) -> UserOut:
    """The thread's session, never removed: it outlives the request, on its worker thread."""
    return add_user(ScopedSession(), payload)


@scoped_router.post("/scoped-removed/users", status_code=status.HTTP_201_CREATED)
def create_user_scoped_removed(payload: UserCreate) -> UserOut:
    """The same, with the teardown a Flask app registers: ``remove()`` closes the session,
    which rolls back whatever it had not committed."""
    try:
        return add_user(ScopedSession(), payload)
    finally:
        ScopedSession.remove()


@scoped_router.post("/per-request/users", status_code=status.HTTP_201_CREATED)
def create_user_per_request(payload: UserCreate, db: SessionDep) -> UserOut:
    """The same rule on the shop app's per-request session (`get_db` closes it)."""
    return add_user(db, payload)


def get_scoped_db() -> Iterator[Session]:
    """A dependency that hands out the thread's session and removes it when the request ends."""
    yield ScopedSession()
    ScopedSession.remove()  # the session of the thread this line runs on


ScopedSessionDep = Annotated[Session, Depends(get_scoped_db)]


class SameSession(BaseModel):
    same_session: bool


@scoped_router.get("/scoped/same-session")
def same_session(db: ScopedSessionDep) -> SameSession:
    """Is the dependency's session the one ``ScopedSession()`` gives the route's code?"""
    return SameSession(same_session=ScopedSession() is db)


def scoped_session_app(database: SyncDatabase) -> FastAPI:
    """``POST /scoped/users`` (a registry session never removed), ``POST /scoped-removed/users``
    (removed at the end of the route), ``POST /per-request/users`` (the shop app's per-request
    dependency), and ``GET /scoped/same-session`` (a dependency built on the registry), on one
    database and one new registry. A sign-up from `CLOSED_DOMAIN` is refused with 403 after the
    user was added to the session."""
    global ScopedSession
    ScopedSession = scoped_session(database.SessionLocal)
    app = FastAPI(title="scoped_session under the threadpool")
    add_error_handlers(app)
    app.include_router(scoped_router)
    app.dependency_overrides[get_db] = database.get_db
    return app
