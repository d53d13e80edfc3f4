"""The notebooks as stored: readable where no kernel runs (GitHub, nbviewer). A widget's output
is stored without the widgets' state, so a renderer shows the plain form each output also
carries (the model explorer's is its starting figure), and no progress bar is stored.
`tests/store_notebook.py` stores them so."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from store_notebook import is_progress_bar

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def outputs(path: Path) -> list[tuple[str, dict]]:
    """Each code cell's source with each of its outputs."""
    cells = json.loads(path.read_text())["cells"]
    return [
        ("".join(cell["source"]), output)
        for cell in cells
        if cell["cell_type"] == "code"
        for output in cell["outputs"]
    ]


STORE = "store it with: python tests/store_notebook.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_widget_output_has_a_plain_form_and_no_state_is_stored(path: Path) -> None:
    assert "widgets" not in json.loads(path.read_text())["metadata"], f"{STORE} {path}"
    for source, output in outputs(path):
        data = output.get("data", {})
        assert not is_progress_bar(output), f"a progress bar after {source!r}: {STORE} {path}"
        if WIDGET in data:
            assert "text/plain" in data, source


def test_the_model_explorer_is_stored_as_its_starting_figure() -> None:
    (notebook,) = [path for path in NOTEBOOKS if path.name.startswith("05_")]
    stored = [out for source, out in outputs(notebook) if "explore_model(" in source]
    (output,) = stored
    assert base64.b64decode(output["data"]["image/png"]).startswith(b"\x89PNG")
    assert output["data"]["text/plain"][0].startswith("At C = 15, L = 20 ms")
