"""Run notebooks top to bottom and store their outputs as the repository keeps them, for nbval
to compare: ``python tests/store_notebook.py notebooks/05_concurrent_requests.ipynb ...``.

Stored this way, a notebook reads well where no kernel runs (GitHub, nbviewer): no widget state
is kept, so a widget's output shows the plain form it also carries (the model explorer's
starting figure), and tqdm's progress bars are left out (their plain form is the bar as it was
drawn first, at 0). Each cell keeps its tags (nbval's, and ``exercise``/``solution``) and
whether JupyterLab shows it collapsed (``metadata.jupyter``); no run times are stored, so storing
a notebook again changes only the outputs that changed. The stored outputs are an SQLite run's;
run notebooks 06 and 10 with a PostgreSQL `DATABASE_URL`, as their first cells say.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET = "application/vnd.jupyter.widget-view+json"
PROGRESS_BAR = re.compile(r"\[[^\]]*(it|request)/s\]")
"""How tqdm's bar ends in its plain form: ``... [00:00, ?request/s]``."""


def is_progress_bar(output: dict) -> bool:
    """A tqdm bar in a notebook: a widget whose plain form is tqdm's text bar."""
    data = output.get("data", {})
    return WIDGET in data and bool(PROGRESS_BAR.search("".join(data.get("text/plain", ""))))


def store(path: Path) -> None:
    """Run `path` in a fresh kernel from its own folder, and write it back as kept."""
    notebook = nbformat.read(path, as_version=4)
    here = {"metadata": {"path": path.parent}}
    client = NotebookClient(
        notebook, timeout=600, store_widget_state=False, record_timing=False, resources=here
    )
    client.execute()
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # run times, left by earlier tools
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not is_progress_bar(output)]
    nbformat.write(notebook, path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        store(Path(name))
        print(f"stored {name}")
