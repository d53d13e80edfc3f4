"""Your app, found as uvicorn finds it: ``MODULE:ATTR``, ``--factory``, ``--app-dir``.

Any ASGI app will do, a FastAPI app wrapped in middleware included (``app = CORSMiddleware(api,
...)``): the probe talks ASGI to it, as a server does.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp


class ProbeError(Exception):
    """The app could not be imported, started or probed: said in one line, no traceback."""


def import_app(spec: str, folder: str | Path | None = None, *, factory: bool = False) -> ASGIApp:
    """``module:attribute`` imported as uvicorn imports it.

    `folder` (``--app-dir``; the current folder by default) goes first on ``sys.path``, so
    ``main:app`` finds ``./main.py``; the attribute may be dotted. With `factory`, the attribute
    is called with no arguments and its result is the app, as ``uvicorn --factory`` does.
    """
    module_name, _, attributes = spec.partition(":")
    if not module_name or not attributes:
        raise ProbeError(f'expected "module:attribute", such as main:app, not {spec!r}')
    where = str(Path.cwd() if folder is None else Path(folder).resolve())
    if where not in sys.path:
        sys.path.insert(0, where)
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # a module the app imports is missing: the app's own error, with its traceback
        raise ProbeError(f"no module {module_name!r} under {where} (--app-dir?)") from None
    for attribute in attributes.split("."):
        try:
            found = getattr(found, attribute)
        except AttributeError:
            raise ProbeError(f"module {module_name!r} has no attribute {attributes!r}") from None
    if factory:
        if not callable(found):
            raise ProbeError(f"--factory: {spec} is not callable (type {type(found).__name__})")
        try:
            found = found()
        except TypeError as exc:
            raise ProbeError(f"--factory: {spec}() failed: {exc}") from None
    elif inspect.isfunction(found) and _takes_no_arguments(found):
        raise ProbeError(f"{spec} is a function of no arguments: if it builds the app, --factory")
    if not callable(found) or inspect.isclass(found):
        raise ProbeError(f"{spec} is not an ASGI app (type {type(found).__name__})")
    app: ASGIApp = found  # callable, and not a factory: as far as a server can tell, an app
    return app


def _takes_no_arguments(function: Any) -> bool:
    optional = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = inspect.signature(function).parameters.values()
    return all(p.default is not p.empty or p.kind in optional for p in parameters)
