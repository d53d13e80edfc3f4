"""The same API mounted once per session setup, so the only difference between them is the setup.

- ``/blocking``: ``async def`` routes using the sync `Session` (every query blocks the event loop);
- ``/threadpool``: ``def`` routes using the sync `Session` (run in AnyIO's threadpool);
- ``/async``: ``async def`` routes using an `AsyncSession` on an async driver.
"""

from . import async_session, blocking, threadpool

SETUPS = ("blocking", "threadpool", "async")
"""The setups' names, which are also their URL prefixes."""

__all__ = ["SETUPS", "async_session", "blocking", "threadpool"]
