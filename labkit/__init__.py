"""labkit: the session lab's app, its instruments, and the bench that measures them.

Folders by job, each importing only from the ones above it in this list:

- `labkit.shop`: the shop app, as a FastAPI project writes it; nothing in it knows it is
  measured;
- `labkit.instruments`: what the lab attaches to any app from outside (session ledger, simulated
  latency, ``Server-Timing``, loop-lag, pool and thread gauges, SQL capture);
- `labkit.infra`: what the lab runs on: PostgreSQL servers and a fresh database per notebook,
  PgBouncer, uvicorn processes, the reaper that cleans up after a killed kernel, Jupyter's proxy;
- `labkit.app`: the lab's instrumented copy of the shop app (`create_app`), its databases,
  the in-process client, seeding, and serving it under uvicorn;
- `labkit.bench`: the load driver, calibration, the grid, the throughput model, results;
- `labkit.probe`: ``python -m labkit probe module:app``, the bench pointed at your own app;
- `labkit.lessons`: one module (or folder) per notebook topic that needs an app or an experiment
  of its own: ``commit``, ``loading``, ``concurrency``, ``lifecycle``, ``transactions``,
  ``workers``, and ``kernel_cost`` for the event loop a notebook runs on;
- `labkit.display`: plots, diagrams, the model explorer, and `readable` (how tables write numbers).

The names below are the few most notebooks use; everything else is imported from the module that
owns it, so a reader can see where a name comes from.
"""

from labkit.app.client import lab_client
from labkit.app.create import create_app
from labkit.app.databases import AsyncDatabase, EngineOptions, SyncDatabase
from labkit.app.seed import create_and_seed
from labkit.bench.load import run_load
from labkit.bench.model import ThroughputModel
from labkit.bench.results import LoadResult
from labkit.bench.setups import SETUPS, Setup
from labkit.display.frames import readable
from labkit.environment import check_environment
from labkit.infra.notebook_database import describe_database, fresh_database

__all__ = [
    "SETUPS",
    "AsyncDatabase",
    "EngineOptions",
    "LoadResult",
    "Setup",
    "SyncDatabase",
    "ThroughputModel",
    "check_environment",
    "create_and_seed",
    "create_app",
    "describe_database",
    "fresh_database",
    "lab_client",
    "readable",
    "run_load",
]
