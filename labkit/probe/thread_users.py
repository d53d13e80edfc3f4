"""Which parts of a route FastAPI runs in AnyIO's worker threads, by name.

FastAPI calls a ``def`` endpoint, a ``def`` dependency, a sync generator dependency and a class
dependency (its ``__init__``) through ``run_in_threadpool``; ``async def`` ones run on the event
loop (fastapi/dependencies/utils.py, ``solve_dependencies``). Knowing which one used the threads
turns "all 40 worker threads were busy" into advice that fits the app: a class dependency
that runs no statement needs no ``AsyncSession``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute


def _target(call: Any) -> Any:
    while isinstance(call, functools.partial):
        call = call.func
    return inspect.unwrap(call) if inspect.isroutine(call) else call


def runs_in_thread(call: Any) -> bool:
    """Whether FastAPI runs `call` (an endpoint or a dependency) in a worker thread."""
    target = _target(call)
    if inspect.isclass(target):
        return True  # its __init__ is sync, whatever its methods are
    function = target if inspect.isroutine(target) else _target(type(target).__call__)
    return not (inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function))


def _kind(call: Any) -> str:
    target = _target(call)
    if inspect.isclass(target):
        return "class"
    if inspect.isgeneratorfunction(target):
        return "def with yield"
    return "def"


def _name(call: Any) -> str:
    """The name the code gives `call`: ``Page``, ``Pagination.__call__``, ``read_item`` (a
    route defined inside ``create_app`` too, without Python's ``<locals>`` path)."""
    target = _target(call)
    named = str(getattr(target, "__qualname__", None) or type(target).__qualname__)
    return named.rsplit("<locals>.", 1)[-1]


def _dependencies(dependant: Dependant) -> list[Dependant]:
    found = []
    for sub in dependant.dependencies:
        found.extend([sub, *_dependencies(sub)])
    return found


def threaded_calls(route: Any) -> list[str]:
    """The route's endpoint and dependencies that run in worker threads, each named with its
    kind ("route read_item (def)", "dependency Pagination (class)"); empty when none do, or
    when `route` is not a FastAPI route (a mounted app's, say, or None: not seen yet).

    `route` is the one the app's router picked for a request (`Served.routes`): FastAPI
    resolves included routers when it routes, so the route is found as a request finds it.
    """
    if not isinstance(route, APIRoute):
        return []
    named = []
    if runs_in_thread(route.endpoint):
        named.append(f"route {_name(route.endpoint)} (def)")
    for dependency in _dependencies(route.dependant):
        if dependency.call is not None and runs_in_thread(dependency.call):
            said = f"dependency {_name(dependency.call)} ({_kind(dependency.call)})"
            if said not in named:
                named.append(said)
    return named
