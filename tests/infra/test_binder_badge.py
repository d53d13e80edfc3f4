"""The README's Binder badge names the repository the checkout came from
(``python -m labkit binder-badge``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit.__main__ import main
from labkit.infra import binder_badge
from labkit.infra.binder_badge import (
    README,
    badge,
    binder_url,
    github_repository,
    origin_remote,
    with_badge,
)

OLD_BADGE = (
    "[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/"
    "session-lab/session-lab/main?urlpath=lab/tree/notebooks/00_start_here.ipynb)"
)
A_README = f"# The session lab\n\n{OLD_BADGE}\n\nSome text, [![CI]](x) and all.\n"


@pytest.mark.parametrize(
    ("remote", "repository"),
    [
        ("https://github.com/ann/session-lab.git", "ann/session-lab"),
        ("https://github.com/ann/session-lab", "ann/session-lab"),
        ("https://github.com/ann/session-lab/", "ann/session-lab"),
        ("https://github.com/ann/session-lab.git/", "ann/session-lab"),
        ("git@github.com:ann/session-lab.git", "ann/session-lab"),
        ("git@github.com:ann/session-lab", "ann/session-lab"),
        ("git@github.com:ann/session-lab/", "ann/session-lab"),
        ("ssh://git@github.com/ann/session-lab.git", "ann/session-lab"),
        ("ssh://git@github.com/ann/session-lab/", "ann/session-lab"),
        ("https://github.com/Ann-2/my.lab_v2.git\n", "Ann-2/my.lab_v2"),  # as git prints it
        ("https://GitHub.com/ann/lab", "ann/lab"),
        # Not a GitHub repository: mybinder.org's gh/ links cannot open these.
        ("/home/ann/session-lab", None),
        ("../session-lab.git", None),
        ("file:///home/ann/session-lab.git", None),
        ("https://gitlab.com/ann/session-lab.git", None),
        ("git@gitlab.com:ann/session-lab.git", None),
        ("https://github.com.evil.example/ann/session-lab", None),
        ("https://github.com/ann", None),
        ("https://github.com/ann/session-lab/tree/main", None),
        ("", None),
    ],
)
def test_github_repository_from_remote_urls(remote: str, repository: str | None) -> None:
    assert github_repository(remote) == repository


def test_the_badge_opens_the_first_notebook_on_the_default_branch() -> None:
    url = "https://mybinder.org/v2/gh/ann/lab/HEAD?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    assert binder_url("ann/lab") == url
    assert binder_url("ann/lab", "v1.0").startswith("https://mybinder.org/v2/gh/ann/lab/v1.0?")
    assert badge("ann/lab") == f"[![Binder](https://mybinder.org/badge_logo.svg)]({url})"


@pytest.mark.parametrize("wrong", ["ann", "ann/lab/x", "ann lab/x", "", "https://github.com/a/b"])
def test_a_badge_for_no_repository_is_refused(wrong: str) -> None:
    with pytest.raises(ValueError, match="OWNER/NAME"):
        badge(wrong)


def test_with_badge_replaces_the_badge_line_and_nothing_else() -> None:
    crlf = A_README.replace("\n", "\r\n")
    for text in (A_README, crlf, A_README.rstrip("\n")):  # the line's own ending is kept
        replaced = with_badge(text, "ann/lab")
        assert replaced == text.replace(OLD_BADGE, badge("ann/lab"))
        assert with_badge(replaced, "ann/lab") == replaced
    assert with_badge(OLD_BADGE, "ann/lab") == badge("ann/lab")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("# No badge\n\n  [![Binder]](indented, so not the badge line)\n", "0 lines"),
        (f"{OLD_BADGE}\n\n{OLD_BADGE}\n", r"2 lines .* \(lines 1, 3\)"),
    ],
)
def test_with_badge_needs_exactly_one_badge_line(text: str, found: str) -> None:
    with pytest.raises(ValueError, match=found):
        with_badge(text, "ann/lab")


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``git init`` with no remote, outside any other repository."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    folder = tmp_path / "checkout"
    folder.mkdir()
    _git(folder, "init", "-q")
    return folder


def test_origin_remote_with_and_without_origin(checkout: Path) -> None:
    assert origin_remote(checkout) is None
    _git(checkout, "remote", "add", "upstream", "git@github.com:parent/lab.git")
    assert origin_remote(checkout) is None  # only origin counts
    _git(checkout, "remote", "add", "origin", "git@github.com:ann/lab.git")
    assert origin_remote(checkout) == "git@github.com:ann/lab.git"


def test_origin_remote_without_a_repository_or_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert origin_remote(tmp_path) is None
    assert origin_remote(tmp_path / "missing") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # git is not on it
    assert origin_remote(tmp_path) is None


@pytest.fixture
def readme(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a README at the root of ``checkout``, as the command's README."""
    path = checkout / "README.md"
    path.write_bytes(A_README.encode())
    monkeypatch.setattr(binder_badge, "README", path)
    return path


def test_command_prints_the_origin_badge_and_writes_it_on_request(readme: Path, capsys) -> None:
    _git(readme.parent, "remote", "add", "origin", "https://github.com/ann/lab.git")
    assert main(["binder-badge"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == badge("ann/lab")
    assert "from the origin remote https://github.com/ann/lab.git" in out
    assert "README.md has another badge line; --write" in out
    assert readme.read_bytes() == A_README.encode()  # looking changes nothing

    assert main(["binder-badge", "--write"]) == 0
    assert "README.md's badge line is now this one" in capsys.readouterr().out
    assert readme.read_bytes() == A_README.replace(OLD_BADGE, badge("ann/lab")).encode()

    assert main(["binder-badge"]) == 0
    assert "README.md has this badge." in capsys.readouterr().out


def test_command_with_repository_given_by_hand(readme: Path, capsys) -> None:
    _git(readme.parent, "remote", "add", "origin", "https://gitlab.com/ann/lab.git")
    assert main(["binder-badge", "--repository", "ann/lab", "--write"]) == 0
    assert "(for ann/lab, from --repository)" in capsys.readouterr().out
    assert readme.read_bytes() == A_README.replace(OLD_BADGE, badge("ann/lab")).encode()
    with pytest.raises(SystemExit) as exited:
        main(["binder-badge", "--repository", "just-a-name"])
    assert exited.value.code == 2
    assert "invalid repository_name value: 'just-a-name'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("remote", "said"),
    [
        (None, "has no origin remote"),
        ("https://gitlab.com/ann/lab.git", "origin remote is https://gitlab.com/ann/lab.git, not"),
    ],
)
def test_command_without_a_github_repository_says_what_to_do(
    readme: Path, remote: str | None, said: str, capsys
) -> None:
    if remote:
        _git(readme.parent, "remote", "add", "origin", remote)
    assert main(["binder-badge", "--write"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert said in captured.err
    assert "--repository OWNER/NAME" in captured.err and "Nothing was changed" in captured.err
    assert readme.read_bytes() == A_README.encode()


def test_command_leaves_a_readme_without_one_badge_line_alone(readme: Path, capsys) -> None:
    readme.write_text("# No badge here\n")
    assert main(["binder-badge", "--repository", "ann/lab", "--write"]) == 1
    assert "0 lines that start with '[![Binder]'" in capsys.readouterr().err
    assert readme.read_text() == "# No badge here\n"


def test_the_readme_badge_is_the_one_the_command_writes() -> None:
    text = README.read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("[![Binder]"))
    named = re.search(r"https://mybinder\.org/v2/gh/([^/]+/[^/]+)/", line)
    assert named, line
    fix = f"python -m labkit binder-badge --repository {named[1]} --write"
    assert line == badge(named[1]), fix  # so --write for this repository changes nothing
    remote = origin_remote(README.parent) if shutil.which("git") else None
    if remote and github_repository(remote):
        assert named[1] == github_repository(remote), f"the origin remote is {remote}"
