"""What the three setups' routes share: parameter types, the lookup statement, the errors."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path, Query, status
from pydantic import AfterValidator
from sqlalchemy import Select, select

from ..models import EMAIL_MAX, User, no_control_characters

MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER; a larger id is a 422, not a driver overflow (500)

UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]
EmailQuery = Annotated[
    str,
    Query(min_length=1, max_length=EMAIL_MAX, description="Exact email."),
    AfterValidator(no_control_characters),
]


def users_with_email(email: str) -> Select[tuple[User]]:
    """The lookup behind ``GET /users?email=``; the value is a bound parameter, never SQL text."""
    return select(User).where(User.email == email)


def user_not_found(detail: str) -> HTTPException:
    """A missing row is the client's 404, not the server's `AttributeError` on ``None``."""
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=detail)


def email_taken(email: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=f"a user with email {email!r} exists")
