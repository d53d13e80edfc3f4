"""The probe's tests share the apps of tests/probe_apps, which keep their SQLite files where
PROBE_APPS_DIR says, read once, when each app is first imported."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def probe_apps_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The apps' SQLite files go to one temporary folder for the session."""
    folder = tmp_path_factory.mktemp("probe_apps")
    saved = os.environ.get("PROBE_APPS_DIR")
    os.environ["PROBE_APPS_DIR"] = str(folder)
    yield folder
    if saved is None:
        del os.environ["PROBE_APPS_DIR"]
    else:
        os.environ["PROBE_APPS_DIR"] = saved
