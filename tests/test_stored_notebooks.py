"""The notebooks as stored: readable where no kernel runs (GitHub, nbviewer). A widget's output
is stored without the widgets' state, so a renderer shows the plain form each output also
carries (the model explorer's is its starting figure), and no progress bar is stored.
`tests/store_notebook.py` stores them so."""

from __future__ import annotations

import base64
import functools
import json
import re
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


# The reader's path: what a reader sees first, and what stays out of sight until asked for.

MAX_FIRST_OPEN_LINES = 8
NBVAL_MARKER = re.compile(r"^\s*#\s*NBVAL_", re.MULTILINE)
SOLUTION_HIDDEN = {"source_hidden": True, "outputs_hidden": True}


@functools.cache
def cells_of(path: Path) -> list[dict]:
    """The notebook's cells, read once for all the checks below."""
    return list(json.loads(path.read_text())["cells"])


def tags(cell: dict) -> list[str]:
    return list(cell["metadata"].get("tags", []))


def collapsed(cell: dict) -> bool:
    return bool(cell["metadata"].get("jupyter", {}).get("source_hidden"))


def source(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_nbval_reads_tags_not_comments(path: Path) -> None:
    marked = [i for i, cell in enumerate(cells_of(path)) if NBVAL_MARKER.search(source(cell))]
    assert marked == [], f"cells {marked} of {path.name}: move # NBVAL_ comments into cell tags"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_first_open_code_cell_is_short(path: Path) -> None:
    first = next(c for c in cells_of(path) if c["cell_type"] == "code" and not collapsed(c))
    lines = source(first).strip().splitlines()
    assert len(lines) <= MAX_FIRST_OPEN_LINES, f"{path.name}: {len(lines)} lines\n{source(first)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_a_collapsed_code_cell_says_above_it_what_it_does(path: Path) -> None:
    """A run of collapsed cells starts under a markdown line, which the reader sees instead."""
    cells = cells_of(path)
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and collapsed(cell) and "solution" not in tags(cell):
            above = cells[i - 1]
            assert above["cell_type"] == "markdown" or collapsed(above), (path.name, i)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_exercises_come_with_a_skeleton_and_collapsed_solutions_after_them(path: Path) -> None:
    cells = cells_of(path)
    exercises = [i for i, cell in enumerate(cells) if "exercise" in tags(cell)]
    solutions = [i for i, cell in enumerate(cells) if "solution" in tags(cell)]
    assert bool(exercises) == bool(solutions), (path.name, exercises, solutions)
    for i in exercises:
        assert cells[i]["cell_type"] == "code" and "..." in source(cells[i]), (path.name, i)
        assert "check(" in source(cells[i + 1]), f"{path.name}: no check under exercise cell {i}"
    for i in solutions:
        cell = cells[i]
        hidden = cell["metadata"].get("jupyter", {})
        wanted = SOLUTION_HIDDEN if cell["cell_type"] == "code" else {"source_hidden": True}
        assert hidden == wanted, f"{path.name}: solution cell {i} is shown ({hidden})"
    if path.stem != "07_check_yourself":  # the quiz answers each question where it is asked
        assert not exercises or max(exercises) < min(solutions), path.name


ANCHOR_LINK = re.compile(r"\]\((\d\d_[a-z0-9_]+\.ipynb)#([^)]+)\)")


def heading_ids(path: Path) -> set[str]:
    """The ids JupyterLab gives a notebook's headings: the heading's text, spaces as dashes."""
    ids = set()
    for cell in cells_of(path):
        if cell["cell_type"] == "markdown":
            for line in source(cell).splitlines():
                if line.startswith("#"):
                    text = line.lstrip("#").strip().replace("`", "").replace("**", "")
                    ids.add(text.replace(" ", "-"))
    return ids


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_links_to_a_heading_find_it(path: Path) -> None:
    for cell in cells_of(path):
        if cell["cell_type"] == "markdown":
            for name, anchor in ANCHOR_LINK.findall(source(cell)):
                target = path.parent / name
                assert target.exists(), f"{path.name} links to {name}, which does not exist"
                assert anchor in heading_ids(target), f"{path.name}: no heading #{anchor} in {name}"


def test_the_readme_and_00s_map_give_the_same_minutes() -> None:
    readme = (NOTEBOOKS[0].parent.parent / "README.md").read_text()
    (start,) = [path for path in NOTEBOOKS if path.name.startswith("00_")]
    in_map = re.findall(r"\]\((\d\d_\w+)\.ipynb\) \| [^|]+\| (\d+) \|", source_of_all(start))
    in_readme = re.findall(r"\]\(notebooks/(\d\d_\w+)\.ipynb\) \| [^|]+\| (\d+) \|", readme)
    in_readme = [(name, minutes) for name, minutes in in_readme if name != start.stem]
    assert in_map and sorted(in_map) == sorted(in_readme)
    assert {name for name, _ in in_map} == {p.stem for p in NOTEBOOKS if p is not start}


def source_of_all(path: Path) -> str:
    return "\n".join(source(cell) for cell in cells_of(path) if cell["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_a_collapsed_solution_shows_no_answer_in_its_bar(path: Path) -> None:
    """JupyterLab shows a collapsed cell's first line in its bar: a solution's code opens with a
    comment, its explanation with a heading or a line in bold."""
    for i, cell in enumerate(cells_of(path)):
        if "solution" in tags(cell):
            first = source(cell).strip().splitlines()[0]
            title = first.startswith("#") or re.fullmatch(r"\*\*[^*]+\*\*", first)
            assert title, f"{path.name}: solution cell {i} opens with {first!r}"


DOCS = re.compile(
    r"\]\((https://(?:fastapi\.tiangolo\.com|docs\.sqlalchemy\.org|www\.starlette\.io"
    r"|www\.postgresql\.org|www\.pgbouncer\.org|docs\.python\.org)/[^)\s]*)\)"
)
"""A markdown link to the documentation of a library or tool the lab teaches."""


def test_the_notebooks_link_the_libraries_docs_where_they_use_them() -> None:
    pages = {
        link
        for path in NOTEBOOKS
        for cell in cells_of(path)
        if cell["cell_type"] == "markdown"
        for link in DOCS.findall(source(cell))
    }
    assert len(pages) >= 15, sorted(pages)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_prose_speaks_to_you_and_names_the_tutorial_page(path: Path) -> None:
    """The reader is "you"; the page the lab grew from is "the tutorial page", named in 00."""
    text = json.dumps(cells_of(path)).lower()  # prose, code and outputs alike
    assert "learner" not in text
    assert "seed page" not in text
    if path.stem.startswith("00"):
        assert "sqlalchemy setup with fastapi" in text  # the page's title, in its own section
