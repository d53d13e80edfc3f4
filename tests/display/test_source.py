"""The shop app's code as code: highlighted in JupyterLab, the source itself as plain text; a
declaration as the module writes it."""

import pytest

from labkit.display.source import declaration, show_declared, show_source
from labkit.lessons.lifecycle import request_steps
from labkit.shop import database


def test_the_source_is_shown_highlighted_and_as_plain_text() -> None:
    shown = show_source(database.get_db)
    assert repr(shown).startswith("def get_db() -> Iterator[Session]:")
    html = shown._repr_html_()
    assert "get_db" in html and "<span" in html  # coloured by pygments


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
