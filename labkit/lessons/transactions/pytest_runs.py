"""Run a few test files as a suite of their own, with pytest in a new process, and read what
each test did.

A notebook that shows a test failing cannot run it inside its own kernel: pytest's plugins, its
imports and its event loops would mix with the kernel's. `run_suite` copies the files into a
new directory (a conftest.py among them is the suite's conftest), runs pytest there in a process
of its own, with none of the lab's options and plugins, and reads each test's outcome and
failure message from pytest's JUnit XML report, not from its console output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PLUGINS_OFF = ("nbval", "hypothesispytest", "cacheprovider", "randomly")
"""The lab's pytest plugins, left out: the suite runs as in a project of your own."""


@dataclass(frozen=True)
class Outcome:
    """One test's result."""

    outcome: str
    """``passed``, ``failed``, ``error`` (in a fixture) or ``skipped``."""
    message: str
    """The exception that failed it, in one line (pytest's own), "" if it passed."""


@dataclass
class SuiteRun:
    """What `run_suite` saw."""

    returncode: int
    outcomes: dict[str, Outcome]
    """By test, as ``file::test[param]`` (the file without ``.py``), in the order they ran."""
    seconds: float
    """Wall time of the whole process: starting Python and pytest included."""
    output: str
    """pytest's console output, for when the report is missing."""

    def counts(self) -> Counter[str]:
        """How many tests ended each way."""
        return Counter(outcome.outcome for outcome in self.outcomes.values())

    def lines(self, file: str | None = None) -> list[str]:
        """One line per test (of `file` only, if given: its name without ``.py``), its outcome
        first; under a failure, its exception (`short`)."""
        rows = []
        for test, result in self.outcomes.items():
            if file is not None and test.split("::")[0] != file:
                continue
            rows.append(f"{result.outcome.upper():<7} {test}")
            if result.message:
                rows.append(f"        {short(result.message)}")
        return rows


def short(message: str) -> str:
    """An exception's one-line message, made shorter: the class without its module, no link to
    SQLAlchemy's error pages, a long ``<...>`` (an object's repr) cut to its first word, and
    memory addresses masked (they differ from run to run)."""
    message = re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", message)
    message = re.sub(r" \(Background on this error at: [^)]*\)", "", message)
    while True:  # innermost first: a repr can hold others
        cut = re.sub(r"<([^\s<>]+)( [^<>]{30,})>", r"«\1 ...»", message)
        if cut == message:
            break
        message = cut
    message = message.replace("«", "<").replace("»", ">")
    return re.sub(r"0x[0-9a-f]+", "0x...", message)


def _outcomes(report: Path) -> dict[str, Outcome]:
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "failed" if tag == "failure" else tag
                message = (
                    (found.get("message") or "").splitlines()[0] if found.get("message") else ""
                )
                break
        outcomes[test] = Outcome(outcome, message)
    return outcomes


def run_suite(
    files: Mapping[str, Path],
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120,
) -> SuiteRun:
    """Copy `files` (``{name in the suite: source}``) into a new directory and run pytest there.

    `env`: variables added to this process's environment (a test database's URL). The directory
    is removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="suite-") as directory:
        suite = Path(directory)
        for name, source in files.items():
            shutil.copyfile(source, suite / name)
        report = suite / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "--color=no", f"--junitxml={report}"]
        command += ["--confcutdir", str(suite), "--rootdir", str(suite), "-o", "addopts="]
        for plugin in PLUGINS_OFF:
            command += ["-p", f"no:{plugin}"]
        start = time.perf_counter()
        completed = subprocess.run(
            command,
            cwd=suite,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        seconds = time.perf_counter() - start
        if not report.exists():
            raise RuntimeError(f"pytest wrote no report:\n{completed.stdout[-3000:]}")
        return SuiteRun(completed.returncode, _outcomes(report), seconds, completed.stdout)
