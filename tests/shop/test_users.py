"""The users API, through HTTP as a client sees it, and through the database as it was saved.

The tests run in file order: the second one checks that the first one's user is gone.
"""

import pytest
from fastapi.testclient import TestClient
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from labkit.shop.models import User

ADA = {"name": "Ada", "email": "ada@example.com"}


def test_create_user(client: TestClient, session: Session) -> None:
    response = client.post("/threadpool/users", json=ADA)
    assert response.status_code == 201
    created = response.json()

    response = client.get(f"/threadpool/users/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    # The route committed, and the row is in the database: a query finds it.
    assert session.scalar(select(User.name).where(User.email == ADA["email"])) == "Ada"


def test_each_test_starts_empty(client: TestClient, session: Session) -> None:
    # The previous test's commit was rolled back with its transaction.
    response = client.get("/threadpool/users", params={"email": ADA["email"]})
    assert response.status_code == 404
    assert session.scalar(select(func.count()).select_from(User)) == 0


def test_duplicate_email_is_409(client: TestClient, session: Session) -> None:
    assert client.post("/blocking/users", json=ADA).status_code == 201
    response = client.post("/blocking/users", json={**ADA, "name": "Another Ada"})
    assert response.status_code == 409
    # The route's rollback undid its own failed INSERT only, not the first user.
    assert session.scalars(select(User.name)).all() == ["Ada"]


def test_bad_input(client: TestClient) -> None:
    assert client.get("/threadpool/users/0").status_code == 422  # ids start at 1
    assert client.get("/threadpool/users/999999").status_code == 404


@pytest.mark.anyio
async def test_async_create_and_read(
    async_client: AsyncClient, async_session: AsyncSession
) -> None:
    response = await async_client.post("/async/users", json=ADA)
    assert response.status_code == 201
    created = response.json()

    response = await async_client.get(f"/async/users/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    count = await async_session.scalar(select(func.count()).select_from(User))
    assert count == 1
