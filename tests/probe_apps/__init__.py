"""Small FastAPI apps, written as their authors would, for ``python -m labkit probe`` to measure.

None of them imports labkit: the probe must find everything it reports from outside. Each one
creates its engine when imported, on an SQLite file in the folder named by ``PROBE_APPS_DIR``
(else a new temporary folder), and seeds a few heroes when it starts.

- `tutorial`: a sync `Session` dependency and ``def`` routes, as FastAPI's SQL tutorial has it;
- `blocking`: the same session in ``async def`` routes;
- `async_session`: an `AsyncSession` on aiosqlite in ``async def`` routes;
- `all_three`: the three apps' routes in one app, under ``/tutorial``, ``/blocking``, ``/async``.
"""
