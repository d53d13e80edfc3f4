"""The learner's code as code: highlighted in JupyterLab, the source itself as plain text."""

from labkit.display.source import show_source
from labkit.shop import database


def test_the_source_is_shown_highlighted_and_as_plain_text() -> None:
    shown = show_source(database.get_db)
    assert repr(shown).startswith("def get_db() -> Iterator[Session]:")
    html = shown._repr_html_()
    assert "get_db" in html and "<span" in html  # coloured by pygments
