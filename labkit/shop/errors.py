"""Failures as clear HTTP answers: a client gets a 4xx or a 503 it can retry, never a bare 500.

A missing row or a duplicate email is decided in the routes (404, 409), and a request that does
not validate is FastAPI's 422. What is left is the database itself failing: unreachable,
restarting, locked by another writer past ``busy_timeout``, or no pooled connection free within
``pool_timeout``. Those are temporary, so the answer is 503 with ``Retry-After``, and the message
names the cause (an exception class, never its text) so it cannot echo the URL or its password.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"""What a 503 tells the client to wait before retrying."""

# PostgreSQL error classes that mean "the server cannot serve you now", whichever driver reports
# them: 08 connection exception, 53 insufficient resources (too many connections), 57 operator
# intervention (shutdown, restart, a terminated backend).
_UNAVAILABLE_SQLSTATE_CLASSES = {"08", "53", "57"}

# SQLite's result codes for a file that cannot be used now. sqlite3 files these under
# `OperationalError`, but it puts "no such table" and SQL syntax errors there too (code
# SQLITE_ERROR): those are bugs, not outages, and must not tell a client to retry.
_SQLITE_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_BUSY,  # another writer held the lock past busy_timeout
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_CANTOPEN,  # missing folder, a directory in the file's place, no permission
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_NOTADB,  # the file was replaced by something else
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_PROTOCOL,
}


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def unavailable_cause(exc: BaseException) -> str | None:
    """The driver's name for the failure if `exc` means "the database cannot serve now", else None.

    The drivers report one outage in different shapes. psycopg raises an `OperationalError` for
    a refused or dropped connection. sqlite3 and aiosqlite carry SQLite's result code, named in
    the answer (``SQLITE_CANTOPEN``). asyncpg raises a generic error (SQLAlchemy wraps it as a
    plain `DBAPIError`) when the server refuses a login, an `InterfaceError` for a connection
    the server closed, and a bare `OSError` (not wrapped at all) when nothing listens on the
    port. Anything else from the database is a bug in the app and stays a 500: above all a
    `ProgrammingError` (PEP 249's class for misuse: a missing table, an sqlite3 connection used
    from a thread it refuses), which can be raised outside any statement too.
    """
    if isinstance(exc, ProgrammingError):
        return None
    if isinstance(exc, DBAPIError):
        driver_error: BaseException = exc.orig if exc.orig is not None else exc
        if type(driver_error).__module__.startswith("sqlalchemy.") and driver_error.__cause__:
            driver_error = driver_error.__cause__  # an async adaptor's wrapper: name the driver's
        sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)  # sqlite3 and aiosqlite
        if sqlite_code is not None:
            primary = sqlite_code & 0xFF  # the extended code's primary result code
            sqlite_name: str | None = getattr(exc.orig, "sqlite_errorname", None)  # beside the code
            return sqlite_name if primary in _SQLITE_UNAVAILABLE_CODES else None
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if (
            isinstance(exc, (OperationalError, InterfaceError))
            or exc.connection_invalidated
            or exc.statement is None  # raised while connecting, before any statement
            or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
        ):
            return type(driver_error).__name__
        return None
    if isinstance(exc, OSError):
        # Only the database is reached over the network or the disk while a request runs.
        return type(exc).__name__
    return None


async def _pool_timeout(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("no pooled connection: %s", type(exc).__name__)
    return _unavailable("no database connection was free in time; retry")


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    cause = unavailable_cause(exc)
    if cause is None:
        raise exc  # not an outage: let it be the 500 (and traceback) a bug deserves
    log.warning("database unavailable: %s", cause)
    return _unavailable(f"the database is unavailable ({cause}); retry")


def _json_safe(value: Any) -> Any:
    """`value` with what strict JSON cannot carry replaced: NaN and infinities by their names,
    lone surrogates (valid in a JSON escape, not in UTF-8) by U+FFFD."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    if isinstance(value, dict):
        return {_json_safe(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 body, made renderable.

    FastAPI's default handler echoes each bad input back; for an input that JSON cannot encode
    (``NaN`` sent as a name, a lone ``\\ud800`` escape) rendering that echo raised, and the
    client's mistake became the server's 500.
    """
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": _json_safe(jsonable_encoder(exc.errors()))},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer invalid requests with a renderable 422 and database outages with a 503."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(PoolTimeoutError, _pool_timeout)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(OSError, _database_error)
