"""The lab's copy of the shop app has the shop app's routes, exactly, and nothing else of theirs
changes: the copy is put together as labkit/shop/main.py puts its `app` together, so a route the
reader adds there must reach the copy too."""

from __future__ import annotations

from labkit.app.create import copy_of_shop
from labkit.shop import main as shop_main


def test_the_copy_serves_the_shop_apps_routes_and_error_handlers() -> None:
    copy, shop = copy_of_shop(), shop_main.app
    assert copy.openapi()["paths"] == shop.openapi()["paths"]
    assert copy.openapi()["components"] == shop.openapi()["components"]
    assert copy.exception_handlers == shop.exception_handlers
    assert copy.user_middleware == shop.user_middleware


def test_the_copy_is_a_new_app_each_time_with_overrides_of_its_own() -> None:
    first, second = copy_of_shop(), copy_of_shop()
    first.dependency_overrides[len] = len
    assert first is not second and not second.dependency_overrides
    assert not shop_main.app.dependency_overrides
