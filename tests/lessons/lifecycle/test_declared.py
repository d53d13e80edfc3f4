"""A declaration is shown as the module writes it."""

from __future__ import annotations

import pytest

from labkit.lessons.lifecycle import request_steps
from labkit.lessons.lifecycle.declared import declaration, show_declared


def test_a_declaration_is_its_line_as_written() -> None:
    assert declaration(request_steps, "FunctionScopedSessionDep") == (
        'FunctionScopedSessionDep = Annotated[Session, Depends(get_db, scope="function")]'
    )


def test_several_declarations_are_shown_one_a_line_as_python() -> None:
    code = show_declared(request_steps, "FunctionScopedSessionDep", "FunctionScopedAsyncSessionDep")
    assert code.data.splitlines()[1].startswith("FunctionScopedAsyncSessionDep = Annotated[")
    assert code.language == "python"


def test_a_name_the_module_does_not_assign_is_refused() -> None:
    with pytest.raises(LookupError, match="no read_user"):
        declaration(request_steps, "read_user")
