"""labkit: the session lab's app and its instruments, imported by every notebook.

- `labkit.shop`: the learner's app, as a FastAPI project writes it;
- `labkit.instruments`: what the lab attaches to an app from outside (session ledger, simulated
  latency, ``Server-Timing``, loop-lag, pool and thread probes);
- `labkit.instrumented`: the learner's app with the instruments on (`create_app`), and the
  small apps of single lessons;
- `labkit.experiments`: the load driver, the grid, the throughput model, the ceilings, `probe`;
- `labkit.display`: plots, the model explorer, and `readable`, how tables write numbers (every
  result's `to_frame()` is a pandas DataFrame; progress bars are tqdm's);
- `labkit.servers`: PostgreSQL servers, PgBouncer, and uvicorn processes (``--workers`` too),
  one of them for the learner's browser, reached through Jupyter's proxy where there is one.

A notebook's setup cell takes what it uses from here, and its plots from `labkit.display.plots`
(kept apart so that a process that only serves or measures never imports matplotlib). The
learner's app itself is imported as modules, `from labkit.shop import threadpool`, since the
notebooks print it.
"""

from .client import event_stream, lab_client, lab_websocket
from .display.frames import readable
from .experiments.ceilings import (
    async_session_gets,
    connection_costs,
    raw_sqlite_lookups,
    session_gets,
)
from .experiments.grid import Grid, calibrate, run_grid, take_turns
from .experiments.kernel_cost import nest_asyncio_cost
from .experiments.load import run_load
from .experiments.lost_updates import Withdrawals, withdraw_concurrently
from .experiments.model import ThroughputModel
from .experiments.prepared import after_a_move, requests_through
from .experiments.results import LoadResult
from .experiments.setups import SETUPS, Setup
from .experiments.socket_load import socket_load
from .experiments.thread_reuse import thread_reuse, worker_threads_used
from .experiments.workers import WorkersModel, load_served, time_workers, workers_rows
from .instrumented import after_response, lessons, request_steps, shared_sessions, transactions
from .instrumented.after_response import (
    InFlight,
    after_response_app,
    cycle_collector_paused,
    until_checked_out,
)
from .instrumented.app import create_app, thread_limit
from .instrumented.databases import (
    AsyncDatabase,
    EngineOptions,
    SyncDatabase,
    without_prepared_statements,
)
from .instrumented.lessons import (
    Timeline,
    author_listing_app,
    commit_after_yield_app,
    connection_release_app,
    refresh_after_commit_app,
)
from .instrumented.request_steps import StepClock, measure_steps, request_steps_app
from .instrumented.shared_sessions import dependency_cache_app, scoped_session_app
from .instruments.events import listening
from .instruments.ledger import LedgerSession, SessionLedger
from .instruments.probes import catch_slow_callbacks, collect_log, health_during, watch_engine
from .instruments.server_timing import parse_server_timing
from .instruments.sqllog import StatementLog, capture_sql, driver_neutral
from .scratch import describe_database, fresh_database
from .seed import create_and_seed, seed_users
from .servers.for_browser import check_docs, serve_for_browser
from .servers.pgbouncer import pgbouncer, pgbouncer_program
from .servers.postgres import (
    drop_database,
    find_server,
    fresh_postgres_database,
    libpq_url,
    throwaway_server,
    watch_server_connections,
)
from .servers.uvicorn import drive_elsewhere, served, serving
from .settings import DATA_DIR, async_url, database_url, safe_url, sqlite_url
from .shop.models import Base, Post, User, UserCreate, UserOut

__all__ = [
    "DATA_DIR",
    "SETUPS",
    "AsyncDatabase",
    "Base",
    "EngineOptions",
    "Grid",
    "InFlight",
    "LedgerSession",
    "LoadResult",
    "Post",
    "SessionLedger",
    "Setup",
    "StatementLog",
    "StepClock",
    "SyncDatabase",
    "ThroughputModel",
    "Timeline",
    "User",
    "UserCreate",
    "UserOut",
    "Withdrawals",
    "WorkersModel",
    "after_a_move",
    "after_response",
    "after_response_app",
    "async_session_gets",
    "async_url",
    "author_listing_app",
    "calibrate",
    "capture_sql",
    "catch_slow_callbacks",
    "check_docs",
    "collect_log",
    "commit_after_yield_app",
    "connection_costs",
    "connection_release_app",
    "create_and_seed",
    "create_app",
    "cycle_collector_paused",
    "database_url",
    "dependency_cache_app",
    "describe_database",
    "drive_elsewhere",
    "driver_neutral",
    "drop_database",
    "event_stream",
    "find_server",
    "fresh_database",
    "fresh_postgres_database",
    "health_during",
    "lab_client",
    "lab_websocket",
    "lessons",
    "libpq_url",
    "listening",
    "load_served",
    "measure_steps",
    "nest_asyncio_cost",
    "parse_server_timing",
    "pgbouncer",
    "pgbouncer_program",
    "raw_sqlite_lookups",
    "readable",
    "refresh_after_commit_app",
    "request_steps",
    "request_steps_app",
    "requests_through",
    "run_grid",
    "run_load",
    "safe_url",
    "scoped_session_app",
    "seed_users",
    "serve_for_browser",
    "served",
    "serving",
    "session_gets",
    "shared_sessions",
    "socket_load",
    "sqlite_url",
    "take_turns",
    "thread_limit",
    "thread_reuse",
    "throwaway_server",
    "time_workers",
    "transactions",
    "until_checked_out",
    "watch_engine",
    "watch_server_connections",
    "withdraw_concurrently",
    "without_prepared_statements",
    "worker_threads_used",
    "workers_rows",
]
