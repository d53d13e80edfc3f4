"""labkit: the session lab's app, setups and measuring tools, imported by every notebook."""

from .app import create_app
from .client import lab_client
from .database import AsyncDatabase, EngineOptions, LabSession, SessionLedger, SyncDatabase
from .load import Grid, LoadResult, calibrate, run_grid, run_load
from .model import ThroughputModel
from .models import Base, Post, User, UserCreate, UserOut
from .settings import async_url, database_url, fresh_sqlite_url, safe_url, sqlite_url
from .sqllog import StatementLog, capture_sql

__all__ = [
    "AsyncDatabase",
    "Base",
    "EngineOptions",
    "Grid",
    "LabSession",
    "LoadResult",
    "Post",
    "SessionLedger",
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
    "fresh_sqlite_url",
    "lab_client",
    "run_grid",
    "run_load",
    "safe_url",
    "sqlite_url",
]
