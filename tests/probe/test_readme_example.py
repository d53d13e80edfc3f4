"""The README's worked example runs as printed: its commands, word for word, give the table it
shows (the same columns, the same paths, no failure), and the figure it names."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from labkit.__main__ import main

pytestmark = pytest.mark.slow  # two probes of a few seconds each

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^\$ (python -m labkit probe (?:[^\n]*\\\n)*[^\n]*)\n(.*?)^```", re.M | re.S)
"""A command of the README, continued lines and all, and what the README prints under it."""


def _commands_and_outputs() -> list[tuple[list[str], str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A worked example", 1)[1].split("\n### ", 1)[0]
    return [
        (shlex.split(command.replace("\\\n", " ")), printed)
        for command, printed in COMMAND.findall(section)
    ]


def _table(printed: str) -> list[list[str]]:
    """The table's lines, split: its header, then a row per point, up to the first blank line."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["path", "C"])
    end = lines.index("", start)
    return [line.split() for line in lines[start:end] if not set(line) <= {"-", " "}]


def test_the_readme_example_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "probe_apps").symlink_to(ROOT / "tests" / "probe_apps")
    monkeypatch.chdir(tmp_path)  # as `cd tests`, with the plot written here
    examples = _commands_and_outputs()
    assert [words[:4] for words, _ in examples] == [["python", "-m", "labkit", "probe"]] * 2
    for words, in_readme in examples:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(words[3:]) == 0
        said = printed.getvalue()
        (header, *rows), (shown_header, *shown_rows) = _table(said), _table(in_readme)
        assert header == shown_header
        assert [row[:3] for row in rows] == [row[:3] for row in shown_rows]  # path, C, ok
        assert {row[header.index("failed")] for row in rows} == {"0"}, said
    assert (tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"
