"""labkit type-checks: ``python -m mypy`` (strict, set up in pyproject.toml) reports nothing.

Where mypy has its cache (.mypy_cache), it starts in the background when collection ends
(tests/conftest.py), checks again only what changed, in about a second, beside the other tests,
and this test finds it done. The first run, with no cache, runs here.
"""

from __future__ import annotations

from support import TypeCheck

TIMEOUT_S = 300
"""A first run, with no cache, takes about 15 s of CPU; a slow or busy machine gets plenty more."""


def test_labkit_type_checks(type_check: TypeCheck) -> None:
    code, output = type_check.result(TIMEOUT_S)
    assert code == 0, f"mypy found type errors (exit code {code}):\n{output}"
