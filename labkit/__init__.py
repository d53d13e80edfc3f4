"""labkit: the session lab's app and its instruments, imported by every notebook.

- `labkit.shop`: the learner's app, as a FastAPI project writes it;
- `labkit.instruments`: what the lab attaches to an app from outside (session ledger, simulated
  latency, ``Server-Timing``, loop-lag, pool and thread probes);
- `labkit.instrumented`: the learner's app with the instruments on (`create_app`), and the
  small apps of single lessons;
- `labkit.experiments`: the load driver, the grid, the throughput model, the ceilings, `probe`;
- `labkit.display`: tables, plots and progress bars for the experiments' results;
- `labkit.servers`: PostgreSQL servers and uvicorn processes.
"""

from .client import lab_client
from .experiments.grid import Grid, calibrate, run_grid
from .experiments.load import run_load
from .experiments.model import ThroughputModel
from .experiments.results import LoadResult
from .experiments.setups import SETUPS, Setup
from .instrumented.app import create_app
from .instrumented.databases import AsyncDatabase, EngineOptions, SyncDatabase
from .instruments.ledger import LedgerSession, SessionLedger
from .instruments.sqllog import StatementLog, capture_sql
from .scratch import describe_database, fresh_database
from .settings import async_url, database_url, safe_url, sqlite_url
from .shop.models import Base, Post, User, UserCreate, UserOut

__all__ = [
    "SETUPS",
    "AsyncDatabase",
    "Base",
    "EngineOptions",
    "Grid",
    "LedgerSession",
    "LoadResult",
    "Post",
    "SessionLedger",
    "Setup",
    "StatementLog",
    "SyncDatabase",
    "ThroughputModel",
    "User",
    "UserCreate",
    "UserOut",
    "async_url",
    "calibrate",
    "capture_sql",
    "create_app",
    "database_url",
    "describe_database",
    "fresh_database",
    "lab_client",
    "run_grid",
    "run_load",
    "safe_url",
    "sqlite_url",
]
