"""Each notebook runs twice in one kernel, without a restart, and says the same thing both times.

nbval checks a notebook in a fresh kernel. A learner instead runs cells again in the kernel they
have: a notebook that leaks state between runs (a handler added twice, a database left half
changed) would pass nbval and still mislead them. Notebooks that time things are checked by nbval
only: running their experiments twice would double the suite's longest part for little more
evidence (00 measures nest_asyncio in two processes; 07 measures the page's comparison table).
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TIMING_NOTEBOOKS = {
    "00_start_here.ipynb",
    "05_concurrent_requests.ipynb",
    "06_postgres_and_pools.ipynb",
    "07_check_yourself.ipynb",
}
RERUN = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if p.name not in TIMING_NOTEBOOKS)


def sanitizers() -> list[tuple[re.Pattern[str], str]]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tests" / "sanitize.cfg")
    return [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]


def compared_text(cell: nbformat.NotebookNode, rules: list[tuple[re.Pattern[str], str]]) -> str:
    """What nbval would compare of a cell's outputs: its text, sanitized; nothing if ignored."""
    if "NBVAL_IGNORE_OUTPUT" in cell.source:
        return ""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    text = "".join(parts)
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


@pytest.mark.parametrize("name", RERUN)
def test_notebook_runs_again_without_a_restart(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code_cells = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    rules = sanitizers()
    runs = []
    with client.setup_kernel():
        for _ in range(2):
            for index, cell in code_cells:
                client.execute_cell(
                    cell, index
                )  # raises unless the cell is tagged raises-exception
            runs.append([compared_text(cell, rules) for _, cell in code_cells])
    first, second = runs
    for (index, cell), before, after in zip(code_cells, first, second, strict=True):
        assert after == before, f"cell {index} said something else the second time:\n{cell.source}"
