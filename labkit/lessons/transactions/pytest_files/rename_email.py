"""A route whose bug shows only once the request's session is closed, tested two ways.

Notebook 08's rename route hands its background task the `User` it loaded, and its session is
closed before the response (``scope="function"``). The test runs through two overrides of
`get_db`: the test's one session for every request, closed by no request
(``lambda: session``), and the conftest's session per request, closed when the request ends.
"""

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from labkit.lessons.lifecycle.after_response import outbox, tasks_router
from labkit.shop.database import get_db
from labkit.shop.models import User

app = FastAPI()
app.include_router(tasks_router)


@pytest.fixture(params=["lambda: session", "a session per request"])
def client(
    request: pytest.FixtureRequest,
    session: Session,
    get_test_db: Callable[[], Iterator[Session]],
) -> Iterator[TestClient]:
    if request.param == "lambda: session":
        app.dependency_overrides[get_db] = lambda: session
    else:
        app.dependency_overrides[get_db] = get_test_db
    yield TestClient(app)
    app.dependency_overrides.clear()


def test_renaming_emails_the_new_name(client: TestClient, session: Session) -> None:
    ada = User(name="Ada", email="ada@example.com")
    session.add(ada)
    session.commit()

    response = client.put(f"/function-scope/users/{ada.id}/name", json={"name": "Grace"})
    assert response.status_code == 204
    assert outbox.sent[-1] == "to ada@example.com: You are now Grace."
