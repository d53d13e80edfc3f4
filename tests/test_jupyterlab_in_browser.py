"""A reader's JupyterLab, in a real browser: notebook 00 runs from the Run menu and shows the
three setups measured, with its setup cell collapsed and no question about Jupyter's news in the
way; a lesson's solutions show collapsed until opened; and notebook 05's model explorer redraws
its figure when a slider moves.

Headless Chromium (Debian's ``chromium``, driven by Playwright; no browser is downloaded) works
on a copy of notebooks/: JupyterLab autosaves what runs, and the repository's notebooks keep the
stored outputs that nbval compares. Where Chromium or Playwright is missing the test is skipped,
with the reason; LAB_REQUIRE_BROWSER (set by CI) makes that a failure. It runs only without a
PostgreSQL `DATABASE_URL`: what it checks is the browser's side, the same on either database, and
the run on PostgreSQL repeats the notebooks under nbval.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest
from support import JupyterLab, jupyter_lab

from labkit.infra.notebook_database import selected_backend

try:
    from playwright.sync_api import Locator, Page, Route, expect, sync_playwright
except ImportError as exc:  # `page` skips, or fails under LAB_REQUIRE_BROWSER, with this reason
    PLAYWRIGHT_MISSING: str | None = f"the playwright package is missing ({exc})"
else:
    PLAYWRIGHT_MISSING = None

pytestmark = pytest.mark.browser  # left out of a plain `pytest`: run with `pytest -m browser`

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_BROWSER = "LAB_REQUIRE_BROWSER"
START_HERE = "00_start_here.ipynb"
CONCURRENT = "05_concurrent_requests.ipynb"
EXPLORER_CALL = "explore_model("
SLIDERS = ["L (ms)", "s (ms)", "pool_size", "max_overflow", "threads", "clients"]
"""The explorer's sliders, top to bottom, by the words beside them."""
ON_PURPOSE = "asyncio.run() cannot be called from a running event loop"
"""The error notebook 00 raises on purpose, in its appendix: the only one it shows."""
ANSWER_CALL = "await compare_setups("
"""Notebook 00's first open cell: the three setups measured, shown as a table."""
ANSWER_COLUMNS = ["setup", "route", "session", "requests/s"]
NEWS_QUESTION = "Would you like to get notified about official Jupyter news?"
"""What JupyterLab asks in a corner of the first screen, unless `postBuild`'s setting is set."""
WITH_SOLUTIONS = "04_loading_and_n_plus_1.ipynb"

SHOWN_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
"""The notebook whose tab is chosen: the others are hidden."""
ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
"""Tracebacks and anything a cell writes to stderr: the red boxes a reader sees."""
ERRORS_BY_CELL = """(panel, error) => [...panel.querySelectorAll(".jp-CodeCell")].flatMap(
    (cell, number) => [...cell.querySelectorAll(error)].map(output => [number, output.textContent])
)"""
"""In one call: a locator per cell and output would cost a round trip to the browser each."""
RAN = re.compile(r"^\[\d+\]:$")
"""A code cell's prompt once it ran: its execution count."""
RUNNING = "[*]:"
"""Running, or queued to run."""
NOT_RAN = "[ ]:"
KERNEL_START_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 120_000
"""Notebook 00's last cells start subprocesses, and 05 calibrates its model: seconds each."""
REDRAW_TIMEOUT_MS = 30_000
"""The kernel redraws the explorer's figure in well under a second, unless the machine is busy."""


def no_browser(reason: str) -> NoReturn:
    """Skip with `reason`; under LAB_REQUIRE_BROWSER, fail with it instead."""
    if os.environ.get(REQUIRE_BROWSER):
        pytest.fail(f"{REQUIRE_BROWSER} is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served copy of notebooks/, the server's files and the screenshots."""
    if selected_backend() == "postgresql":
        pytest.skip("the browser's side is the same on PostgreSQL: the run without it checks it")
    folder = tmp_path_factory.mktemp("jupyterlab-in-browser")
    shutil.copytree(ROOT / "notebooks", folder / "notebooks")
    return folder


@pytest.fixture(scope="module")
def chromium(folder: Path) -> str:
    """Debian's Chromium, for Playwright to drive: where it or Playwright is missing, skip (fail
    under LAB_REQUIRE_BROWSER)."""
    if PLAYWRIGHT_MISSING:
        no_browser(PLAYWRIGHT_MISSING)
    program = shutil.which("chromium")
    if program is None:
        no_browser("Debian's chromium is not installed (apt-get install chromium)")
    return program


@pytest.fixture(scope="module")
def lab(folder: Path, chromium: str) -> Iterator[JupyterLab]:
    """JupyterLab serving the copy, started only where a browser can open it."""
    with jupyter_lab(folder / "notebooks", folder / "lab") as lab:
        yield lab


@pytest.fixture(scope="module")
def page(lab: JupyterLab, chromium: str) -> Iterator[Page]:
    """JupyterLab in headless Chromium, opened on notebook 00 as a reader's link opens it."""
    with sync_playwright() as playwright:
        # CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(lab.url(f"/lab/tree/{START_HERE}?reset"))
            yield page
        finally:
            browser.close()


@contextmanager
def screenshot_after(page: Page, lab: JupyterLab, path: Path) -> Iterator[None]:
    """Save what the page shows at the end to `path` (on failure, scrolled to the first error
    output); a failure names it and the server's log."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as exc:
        exc.add_note(f"screenshot: {path}\njupyter lab's log: {lab.log}")
        errors = page.locator(f"{SHOWN_NOTEBOOK} {ERROR_OUTPUT}")
        if errors.count():
            errors.first.scroll_into_view_if_needed()
            expect(errors.first).to_be_in_viewport()
        raise
    finally:
        page.screenshot(path=path)


def collapsed(cell: dict) -> bool:
    """Whether JupyterLab shows `cell` with its code collapsed."""
    return bool(cell["metadata"].get("jupyter", {}).get("source_hidden"))


def code_cells(notebook: Path) -> list[dict]:
    """The code cells of the notebook file at `notebook`, in order."""
    return [
        cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"
    ]


def open_notebook(page: Page, notebook: Path) -> Locator:
    """Open `notebook` from the file browser (or show it, if open) once its kernel is idle, with
    its stored outputs cleared: every output then seen comes from this run. Its panel.

    The number of code cells is the file's: JupyterLab draws a long notebook's cells a few at a
    time, so a count read from the page can be taken before the last are drawn."""
    page.locator(".jp-DirListing-item", has_text=notebook.name).dblclick()
    expect_kernel_idle(page, notebook.name, timeout_ms=KERNEL_START_TIMEOUT_MS)
    panel = page.locator(SHOWN_NOTEBOOK)
    choose(page, "Edit", "Clear Outputs of All Cells")
    expect(panel.locator(".jp-OutputArea-output")).to_have_count(0)
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
    # a collapsed cell draws its prompt empty: the bar the reader clicks to open it
    expect(prompts).to_have_text(
        ["" if collapsed(cell) else NOT_RAN for cell in code_cells(notebook)]
    )
    return panel


def expect_kernel_idle(page: Page, name: str, timeout_ms: float = 15_000) -> None:
    """The status bar says that notebook `name`'s kernel is idle: started, and running nothing.

    On a loaded machine the status bar can say "Busy" for seconds after the last prompt lost its
    ``[*]`` (a clean-clone CI run saw it past 5 s), so it gets 15 s.
    """
    status = page.get_by_title(f"Change kernel for {name}")
    expect(status).to_have_text("Python 3 (ipykernel) | Idle", timeout=timeout_ms)


def choose(page: Page, menu: str, item: str) -> None:
    """Click `menu` in the menu bar, then `item` in it, by the words a reader reads."""
    page.locator(".lm-MenuBar").get_by_text(menu, exact=True).click()
    page.locator(".lm-Menu").get_by_text(item, exact=True).click()


def wait_until_run(
    page: Page, panel: Locator, name: str, ran: int, notebook: Path | None = None
) -> None:
    """Wait until the run that was started ends, then check that the first `ran` code cells ran
    (they show an execution count) and no other did. Where `notebook` is given, its collapsed
    cells are left out of both: their prompts stay empty.

    A cell that raises ends the run: the cells queued after it lose their ``[*]`` and stay
    unrun, so the run is over once no prompt shows ``[*]``, however it went.
    """
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
    cells = code_cells(notebook) if notebook is not None else []
    first_open = next((n for n, cell in enumerate(cells) if not collapsed(cell)), 0)
    expect(prompts.nth(first_open)).to_have_text(RAN, timeout=RUN_TIMEOUT_MS)
    expect(prompts.filter(has_text=RUNNING)).to_have_count(0, timeout=RUN_TIMEOUT_MS)
    expect_kernel_idle(page, name)
    shown = prompts.all_text_contents()
    if cells:
        shown = [prompt for prompt, cell in zip(shown, cells, strict=True) if not collapsed(cell)]
    not_run = [number for number, prompt in enumerate(shown) if not RAN.match(prompt)]
    assert not_run == list(range(ran, len(shown))), (
        f"code cells not run (from 0): {not_run}; errors shown: {errors_shown(panel)}"
    )


def errors_shown(panel: Locator) -> list[tuple[int, str]]:
    """Each error output: the number of its code cell (from 0) and its text."""
    return [(number, text) for number, text in panel.evaluate(ERRORS_BY_CELL, ERROR_OUTPUT)]


def test_notebook_00_runs_all_cells_from_the_run_menu(
    page: Page, lab: JupyterLab, folder: Path
) -> None:
    with screenshot_after(page, lab, folder / "00_start_here.png"):
        notebook = folder / "notebooks" / START_HERE
        panel = open_notebook(page, notebook)
        choose(page, "Run", "Run All Cells")
        opened = [cell for cell in code_cells(notebook) if not collapsed(cell)]
        wait_until_run(page, panel, START_HERE, ran=len(opened), notebook=notebook)
        outputs = panel.locator(".jp-OutputArea-output")
        expect(outputs.filter(has_text=re.compile(r": ready\.$", re.MULTILINE))).to_have_count(1)
        expect(outputs.filter(has_text=re.compile(r"GET\s+/health\s"))).to_have_count(1)
        cells = json.loads(notebook.read_text())["cells"]
        answer = [i for i, cell in enumerate(cells) if ANSWER_CALL in "".join(cell["source"])]
        table = panel.locator(".jp-Cell").nth(answer[0]).locator(".jp-OutputArea-output table")
        expect(table.locator("thead th")).to_contain_text(ANSWER_COLUMNS)
        expect(table.locator("tbody tr")).to_have_count(3)
        for index, cell in enumerate(cells):
            if cell["metadata"].get("jupyter", {}).get("source_hidden"):
                shown = panel.locator(".jp-Cell").nth(index)
                expect(shown.locator(".jp-InputPlaceholder")).to_be_visible()
        expect(page.get_by_text(NEWS_QUESTION)).to_have_count(0)
        errors = errors_shown(panel)
        on_purpose = [  # the cells that raise to show an error, by nbval's tag
            number
            for number, cell in enumerate(code_cells(notebook))
            if "raises-exception" in cell["metadata"].get("tags", [])
        ]
        assert [number for number, _ in errors] == on_purpose == [on_purpose[0]], errors
        assert ON_PURPOSE in errors[0][1], errors


def test_solutions_show_collapsed_with_their_outputs(
    page: Page, lab: JupyterLab, folder: Path
) -> None:
    """A lesson's worked solutions are collapsed, code and output, until the reader opens one."""
    notebook = folder / "notebooks" / WITH_SOLUTIONS
    cells = json.loads(notebook.read_text())["cells"]
    solutions = [
        index
        for index, cell in enumerate(cells)
        if cell["cell_type"] == "code" and "solution" in cell["metadata"].get("tags", [])
    ]
    assert solutions, f"{WITH_SOLUTIONS} has no cell tagged solution"
    with screenshot_after(page, lab, folder / "solutions_collapsed.png"):
        page.locator(".jp-DirListing-item", has_text=WITH_SOLUTIONS).dblclick()
        expect_kernel_idle(page, WITH_SOLUTIONS, timeout_ms=KERNEL_START_TIMEOUT_MS)
        panel = page.locator(SHOWN_NOTEBOOK)
        for index in solutions:
            cell = panel.locator(".jp-Cell").nth(index)
            cell.scroll_into_view_if_needed()
            # code and outputs both hidden: JupyterLab draws one bar, and hides the outputs' too
            expect(cell.locator(".jp-InputPlaceholder")).to_be_visible()
            expect(cell.locator(".jp-OutputArea-output")).to_have_count(0)


def explorer_cell(notebook: Path) -> tuple[int, int]:
    """Where the cell that shows the model explorer is, among all cells, and how many open code
    cells run to show it: those above it, and itself (collapsed ones run too, unseen)."""
    cells = json.loads(notebook.read_text())["cells"]
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code" and EXPLORER_CALL in "".join(cell["source"]):
            above = cells[: index + 1]
            return index, sum(c["cell_type"] == "code" and not collapsed(c) for c in above)
    raise AssertionError(f"{notebook.name} has no cell that calls {EXPLORER_CALL}...)")


def test_notebook_05_redraws_the_model_when_a_slider_moves(
    page: Page, lab: JupyterLab, folder: Path
) -> None:
    index, ran = explorer_cell(folder / "notebooks" / CONCURRENT)
    with screenshot_after(page, lab, folder / "05_concurrent_requests.png"):
        panel = open_notebook(page, folder / "notebooks" / CONCURRENT)
        cell = panel.locator(".jp-Cell").nth(index)
        cell.locator(".jp-InputPrompt").click()
        choose(page, "Run", "Run All Above Selected Cell")
        choose(page, "Run", "Run Selected Cell and Do not Advance")
        wait_until_run(page, panel, CONCURRENT, ran=ran, notebook=folder / "notebooks" / CONCURRENT)
        image = cell.locator(".widget-image")
        expect(image).to_be_visible(timeout=REDRAW_TIMEOUT_MS)
        expect(cell.locator(".widget-slider .widget-label")).to_have_text(SLIDERS)
        expect(cell.get_by_role("button", name="measure this point")).to_be_visible()
        before = image.get_attribute("src") or ""
        latency = cell.locator(".widget-slider").filter(has=page.get_by_text("L (ms)", exact=True))
        latency.locator(".noUi-handle").press("ArrowRight")
        expect(image).not_to_have_attribute("src", before, timeout=REDRAW_TIMEOUT_MS)
        assert errors_shown(panel) == []


DOCS_NOTEBOOK = "open_the_docs.ipynb"
DOCS_CELLS = [
    "from labkit.app.databases import EngineOptions\n"
    "from labkit.app.for_browser import serve_for_browser\n"
    "from labkit.settings import sqlite_url\n"
    'docs_server = serve_for_browser(sqlite_url("docs.db"), EngineOptions(latency_ms=5))\n'
    "docs_server.docs",
    "docs_server.stop()",
]
"""What notebook 05 does to open the docs, on a database of its own: start the lab's app for the
browser and show the link; then stop it."""
OPERATION = "/async/users/{user_id}"
"""The operation the test tries out, as Swagger UI lists it."""


def test_the_docs_link_opens_swagger_ui_through_jupyters_proxy_offline(
    page: Page, lab: JupyterLab, folder: Path
) -> None:
    """Click the link a cell shows: Swagger UI opens through the Jupyter server's proxy, every
    request it makes stays on this machine (any other is refused and listed), and "Try it out"
    reaches the app and shows its ``Server-Timing``."""
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    cells = [{**cell, "source": source} for source in DOCS_CELLS]
    python = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    metadata = {"kernelspec": python}  # without it, JupyterLab asks which kernel to start
    notebook = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    (folder / "notebooks" / DOCS_NOTEBOOK).write_text(json.dumps(notebook))
    elsewhere: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.context.route("**/*", loopback_only)
    with screenshot_after(page, lab, folder / "docs_through_proxy.png"):
        page.goto(lab.url(f"/lab/tree/{DOCS_NOTEBOOK}"))
        expect_kernel_idle(page, DOCS_NOTEBOOK, timeout_ms=KERNEL_START_TIMEOUT_MS)
        panel = page.locator(SHOWN_NOTEBOOK)
        panel.locator(".jp-CodeCell .jp-InputPrompt").first.click()
        choose(page, "Run", "Run Selected Cell and Do not Advance")
        wait_until_run(page, panel, DOCS_NOTEBOOK, ran=1)
        link = panel.locator(".jp-OutputArea-output a").first
        expect(link).to_have_attribute("href", re.compile(r"^/proxy/\d+/docs$"))
        with page.expect_popup() as opened:
            link.click()
        docs = opened.value
        try:
            with screenshot_after(docs, lab, folder / "swagger_ui.png"):
                operation = docs.locator(".opblock").filter(has_text=OPERATION).first
                expect(operation).to_be_visible(timeout=REDRAW_TIMEOUT_MS)
                operation.locator(".opblock-summary").click()
                operation.get_by_role("button", name="Try it out").click()
                operation.locator("input[placeholder='user_id']").fill("1")
                operation.get_by_role("button", name="Execute").click()
                answer = operation.locator(".live-responses-table tbody")
                status = answer.locator("td.response-col_status")
                expect(status).to_have_text("200", timeout=REDRAW_TIMEOUT_MS)
                expect(answer).to_contain_text("server-timing")
        finally:
            docs.close()
        panel.locator(".jp-CodeCell .jp-InputPrompt").nth(1).click()
        choose(page, "Run", "Run Selected Cell and Do not Advance")
        wait_until_run(page, panel, DOCS_NOTEBOOK, ran=2)
        assert errors_shown(panel) == []
    page.context.unroute("**/*")
    assert elsewhere == []
