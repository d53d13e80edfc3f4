"""labkit type-checks: ``python -m mypy`` (strict, set up in pyproject.toml) reports nothing.

mypy starts in the background when collection ends (tests/conftest.py) and runs beside the
other tests; this test waits for it. Its cache (.mypy_cache) makes a run after the first take
about a second: only what changed is checked again.
"""

from __future__ import annotations

from support import TypeCheck

TIMEOUT_S = 300
"""A first run, with no cache, takes about 15 s of CPU; a slow or busy machine gets plenty more."""


def test_labkit_type_checks(type_check: TypeCheck) -> None:
    code, output = type_check.result(TIMEOUT_S)
    assert code == 0, f"mypy found type errors (exit code {code}):\n{output}"
