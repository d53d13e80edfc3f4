"""Database failures as clear HTTP answers: a client sees a 503 it can retry, never a bare 500.

A missing row or a duplicate email is decided in the routes (404, 409). What is left is the
database itself failing: unreachable, locked by another writer past ``busy_timeout``, or no
pooled connection free within ``pool_timeout``. Those are temporary, so the answer is 503 with
``Retry-After``, and the message names the cause without echoing the URL or its password.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger("labkit.errors")


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


async def _pool_timeout(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("no pooled connection: %s", type(exc).__name__)
    return _unavailable("no database connection was free in time; retry")


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    cause = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    log.warning("database unavailable: %s", cause)
    return _unavailable(f"the database is unavailable ({cause}); retry")


def add_database_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PoolTimeoutError, _pool_timeout)
    app.add_exception_handler(OperationalError, _database_error)
