"""Bad input to any route of any setup is the client's 4xx with a JSON reason, never a 500.

The named cases are checked one by one; then Hypothesis generates bodies, emails and ids,
including what JSON can carry but a database or a JSON encoder cannot (NUL, lone surrogates,
NaN). The in-process client re-raises any exception the app lets escape, so a 500 fails the test
with its traceback. Everything runs on SQLite and, where a server answers, on PostgreSQL: the two
reject different strings (PostgreSQL cannot store NUL at all).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL
from support import every_backend

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.app.seed import seed_users
from labkit.bench.setups import SETUPS
from labkit.shop.models import EMAIL_MAX, MAX_ID, NAME_MAX

pytestmark = [pytest.mark.anyio, every_backend]

SEED_EMAILS = {str(row["email"]) for row in seed_users()}
SEED_IDS = {int(str(row["id"])) for row in seed_users()}

# One app serves every example of a property (that is the point: state piles up and still
# nothing breaks), so Hypothesis's warning about function-scoped fixtures does not apply.
PROPERTY = settings(
    max_examples=60,
    deadline=None,  # a shared 2-core machine: time is not the property under test
    database=None,  # keep no example database in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def client(db_url: URL) -> AsyncIterator[httpx.AsyncClient]:
    async with lab_client(create_app(db_url)) as client:
        yield client


def strict_json(response: httpx.Response) -> Any:
    """The body, parsed as strict JSON (no NaN or Infinity), which any client can read."""
    assert response.headers["content-type"] == "application/json", response.headers

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(response.content, parse_constant=refuse)


def assert_validation_error(response: httpx.Response, where: str) -> None:
    """A 422 whose reasons name the faulty part of the request (body, query or path)."""
    assert response.status_code == 422, response.text
    detail = strict_json(response)["detail"]
    assert detail, response.text
    assert all(error["loc"][0] == where and error["msg"] for error in detail), detail


def raw_json(value: Any) -> bytes:
    """JSON text as a careless client may send it: NaN and lone surrogates included."""
    return json.dumps(value, allow_nan=True).encode()


async def post_raw(
    client: httpx.AsyncClient, setup: str, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    return await client.post(
        f"/{setup}/users", content=body, headers={"content-type": content_type}
    )


# --- the named cases (each test loops over them: one app per backend, not one per case) ----

BAD_IDS = ["abc", "1.5", "0", "-3", str(MAX_ID + 1), "9" * 40, "1e3", "%00", "0x10"]

BAD_BODIES = {
    "no body": b"",
    "malformed JSON": b'{"name": "Ada", "email": ',
    "not an object": b'["Ada", "ada@example.com"]',
    "missing email": raw_json({"name": "Ada"}),
    "name of the wrong type": raw_json({"name": 42, "email": "ada@example.com"}),
    "email of the wrong type": raw_json({"name": "Ada", "email": ["ada@example.com"]}),
    "over-long name": raw_json({"name": "x" * (NAME_MAX + 1), "email": "ada@example.com"}),
    "blank name": raw_json({"name": "   ", "email": "ada@example.com"}),
    "email that is not an email": raw_json({"name": "Ada", "email": "ada at home"}),
    "over-long email": raw_json({"name": "Ada", "email": "a" * EMAIL_MAX + "@example.com"}),
    "unknown field": raw_json({"name": "Ada", "email": "ada@example.com", "admin": True}),
    "NUL in the name": raw_json({"name": "Ada\x00", "email": "ada@example.com"}),
    "NaN as the name": raw_json({"name": math.nan, "email": "ada@example.com"}),
    "lone surrogate": raw_json({"name": "Ada \ud800", "email": "ada@example.com"}),
}

BAD_EMAIL_QUERIES = ["", "x" * (EMAIL_MAX + 1), "user0001@example.com\x00"]


async def test_id_that_is_not_a_valid_integer_is_422_naming_the_path(client) -> None:
    for setup in SETUPS:
        for bad_id in BAD_IDS:
            assert_validation_error(await client.get(f"/{setup}/users/{bad_id}"), "path")


async def test_bad_body_is_422_naming_the_body(client) -> None:
    for setup in SETUPS:
        for case, body in BAD_BODIES.items():
            response = await post_raw(client, setup, body)
            assert response.status_code == 422, (setup, case, response.text)
            assert_validation_error(response, "body")
        text_plain = raw_json({"name": "Ada", "email": "ada@example.com"})
        assert_validation_error(await post_raw(client, setup, text_plain, "text/plain"), "body")


async def test_body_that_cannot_be_decoded_is_400(client) -> None:
    for setup in SETUPS:
        for body in [b'{"name": "\xff"}', b"[" * 100_000 + b"]" * 100_000]:
            response = await post_raw(client, setup, body)
            assert response.status_code == 400, (setup, body[:20])
            assert strict_json(response)["detail"]


async def test_duplicate_email_is_409_and_adds_nothing(client) -> None:
    taken = {"name": "Someone", "email": "user0001@example.com"}
    for setup in SETUPS:
        response = await client.post(f"/{setup}/users", json=taken)
        assert response.status_code == 409, setup
        assert strict_json(response) == {"detail": f"a user with email {taken['email']!r} exists"}
        found = await client.get(f"/{setup}/users", params={"email": taken["email"]})
        assert found.json()["id"] == 1


async def test_bad_email_query_is_422_naming_the_query(client) -> None:
    for setup in SETUPS:
        for email in BAD_EMAIL_QUERIES:
            response = await client.get(f"/{setup}/users", params={"email": email})
            assert_validation_error(response, "query")


# --- generated input ---------------------------------------------------------------------

# What breaks servers, often enough to be drawn: NUL (PostgreSQL refuses it), lone surrogates
# and NaN (valid in Python's JSON, not encodable back), quotes, escapes and line breaks.
TROUBLE = ["\x00", "\ud800", "\udfff", "\n", "\x1b", "\u202e", "'", '"', "\\", "%", "😀"]
any_text = st.lists(
    st.sampled_from(TROUBLE) | st.characters(exclude_categories=()), max_size=NAME_MAX + 20
).map("".join)
any_float = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_float | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
field_values = st.one_of(
    any_text,
    st.emails(),
    any_text.map(lambda text: f"{text}@example.com"),
    st.sampled_from(sorted(SEED_EMAILS)[:3]),
    json_values,
)
user_bodies = st.fixed_dictionaries(
    {}, optional={"name": field_values, "email": field_values, "extra": json_values}
)


@given(
    setup=st.sampled_from(SETUPS),
    body=st.one_of(user_bodies.map(raw_json), json_values.map(raw_json), st.binary(max_size=64)),
)
@PROPERTY
async def test_any_post_body_is_answered_in_json_and_only_a_201_stores_a_row(
    client, setup: str, body: bytes
) -> None:
    response = await post_raw(client, setup, body)
    assert response.status_code in {201, 400, 409, 422}, response.text
    answer = strict_json(response)
    if response.status_code == 201:
        stored = await client.get(f"/{setup}/users/{answer['id']}")
        assert stored.json() == answer
    else:
        assert answer["detail"]


def expected_for_email(email: str) -> int:
    too_short_or_long = not 1 <= len(email) <= EMAIL_MAX
    if too_short_or_long or any(unicodedata.category(ch) == "Cc" for ch in email):
        return 422
    return 200 if email in SEED_EMAILS else 404


# A URL carries any text but lone surrogates (they have no UTF-8 form to percent-encode).
url_text = st.lists(
    st.sampled_from([ch for ch in TROUBLE if not "\ud800" <= ch <= "\udfff"])
    | st.characters(exclude_categories=["Cs"]),
    max_size=EMAIL_MAX + 5,
).map("".join)


@given(
    setup=st.sampled_from(SETUPS),
    email=st.one_of(
        url_text, st.emails(), st.sampled_from(sorted(SEED_EMAILS)), st.just("' OR 1=1 --")
    ),
)
@PROPERTY
async def test_any_email_query_is_an_exact_lookup(client, setup: str, email: str) -> None:
    response = await client.get(f"/{setup}/users", params={"email": email})
    assert response.status_code == expected_for_email(email), response.text
    answer = strict_json(response)
    if response.status_code == 200:
        assert answer["email"] == email


@given(setup=st.sampled_from(SETUPS), user_id=st.integers())
@PROPERTY
async def test_any_integer_id_is_found_missing_or_out_of_range(
    client, setup: str, user_id: int
) -> None:
    response = await client.get(f"/{setup}/users/{user_id}")
    if not 1 <= user_id <= MAX_ID:
        assert_validation_error(response, "path")
    elif user_id in SEED_IDS:
        assert response.status_code == 200
        assert strict_json(response)["id"] == user_id
    else:
        assert response.status_code == 404
        assert strict_json(response) == {"detail": f"no user with id {user_id}"}


# A "/" makes the text a path of more segments ("1/2", "1/"), which the router answers (404,
# or a redirect for a trailing slash) before any id is read: not an id, so not drawn.
@given(setup=st.sampled_from(SETUPS), raw_id=url_text.filter(lambda text: text and "/" not in text))
@PROPERTY
async def test_any_text_as_id_is_answered_in_json(client, setup: str, raw_id: str) -> None:
    # Dots are escaped too, or the client would resolve ".." before sending.
    segment = quote(raw_id, safe="").replace(".", "%2E")
    response = await client.get(f"/{setup}/users/{segment}")
    assert response.status_code in {200, 404, 422}, response.text
    answer = strict_json(response)
    assert answer["id"] if response.status_code == 200 else answer["detail"]
