"""The setup check every notebook runs first: the right Python and libraries, or a clear message.

A notebook that fails halfway with an obscure `AttributeError` because an old SQLAlchemy is
installed teaches nothing; one that stops at its first cell and says what to install does.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

# The oldest version of each library the lab's lessons are true for (requirements.txt pins them).
MINIMUM = {
    "sqlalchemy": (2, 1),
    "greenlet": (3, 0),
    "fastapi": (0, 165),
    "pydantic": (2, 0),
    "aiosqlite": (0, 20),
    "httpx": (0, 27),
}
PYTHON_MINIMUM = (3, 11)
FIX = "run `pip install -r requirements.txt` in the lab's folder, then restart the kernel"


def _as_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def installed_versions() -> dict[str, str]:
    """The installed version of each library the lab checks ("missing" when not installed)."""
    found = {}
    for name in MINIMUM:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def check_environment() -> None:
    """Raise `RuntimeError` naming every problem, or print the versions in use on one line."""
    problems = []
    if sys.version_info[:2] < PYTHON_MINIMUM:
        problems.append(f"Python {sys.version.split()[0]} is older than 3.11")
    found = installed_versions()
    for name, minimum in MINIMUM.items():
        have = found[name]
        wanted = ".".join(map(str, minimum))
        if have == "missing":
            problems.append(f"{name} is not installed (need {wanted} or newer)")
        elif _as_tuple(have) < minimum:
            problems.append(f"{name} {have} is older than {wanted}")
    if problems:
        raise RuntimeError("this lab cannot run here: " + "; ".join(problems) + f". To fix: {FIX}.")
    listed = ", ".join(f"{name} {have}" for name, have in found.items())
    print(f"Python {sys.version_info.major}.{sys.version_info.minor}, {listed}: ready.")
