"""The README's Binder badge, made from the repository the checkout came from.

A badge that names the wrong repository sends every reader who clicks it to someone else's code
(or to a 404), and a fork keeps its parent's badge unless someone rewrites it. So the badge is
made from ``git remote get-url origin`` (``python -m labkit binder-badge``), not typed by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
"""The README whose badge ``python -m labkit binder-badge`` checks and rewrites."""

BADGE_START = "[![Binder]"
"""How the badge line starts: the one line of the README that ``with_badge`` replaces."""

_REPOSITORY = re.compile(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+")
"""What GitHub allows in an owner's and a repository's name."""

_GITHUB_REMOTE = re.compile(
    # The forms GitHub gives for a clone (HTTPS, SSH, SSH as a URL), with or without the
    # ``.git`` and a trailing slash; the name is matched lazily so that ``.git`` stays out of it.
    r"(?:https://(?i:github\.com)/|git@(?i:github\.com):|ssh://git@(?i:github\.com)/)"
    r"(?P<repository>[A-Za-z0-9-]+/[A-Za-z0-9._-]+?)(?:\.git)?/?"
)


def github_repository(remote_url: str) -> str | None:
    """``owner/name`` of a GitHub remote URL; None for a local path or another host, which
    mybinder.org's ``gh/`` links cannot open."""
    found = _GITHUB_REMOTE.fullmatch(remote_url.strip())
    return found["repository"] if found else None


def origin_remote(folder: Path) -> str | None:
    """The URL of ``folder``'s ``origin`` remote, or None where git, the repository or the remote
    is missing: each of these is an ordinary state of a checkout (a download as a zip file, a
    fresh ``git init``), not an error."""
    try:
        done = subprocess.run(
            ["git", "remote", "get-url", "origin"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
    except (FileNotFoundError, NotADirectoryError):  # no git, or no such folder
        return None
    url = done.stdout.strip()
    return url if done.returncode == 0 and url else None


def repository_name(text: str) -> str:
    """``text`` if it is a GitHub ``OWNER/NAME``, else ValueError: a typo must not reach the
    README as a badge that leads nowhere (argparse's check of ``--repository``, too)."""
    if not _REPOSITORY.fullmatch(text):
        raise ValueError(f"not a GitHub repository as OWNER/NAME: {text!r}")
    return text


def binder_url(repository: str, ref: str = "HEAD") -> str:
    """The mybinder.org URL that opens JupyterLab on the first notebook. ``HEAD`` makes Binder
    take the repository's default branch, whatever it is called (main, master, ...)."""
    return (
        f"https://mybinder.org/v2/gh/{repository_name(repository)}/{ref}"
        "?urlpath=lab/tree/notebooks/00_start_here.ipynb"
    )


def badge(repository: str) -> str:
    """The README's badge line (markdown) for ``repository``."""
    return f"{BADGE_START}(https://mybinder.org/badge_logo.svg)]({binder_url(repository)})"


def with_badge(readme_text: str, repository: str) -> str:
    """``readme_text`` with its one badge line replaced by ``badge(repository)``; every other
    character, line endings included, is kept. Raises ValueError where there is no badge line
    or more than one, since then there is no telling which line a reader sees as the badge."""
    lines = readme_text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.startswith(BADGE_START)]
    if len(found) != 1:
        where = f" (lines {', '.join(str(i + 1) for i in found)})" if found else ""
        raise ValueError(
            f"the README has {len(found)} lines that start with {BADGE_START!r}{where}; "
            "the badge is rewritten only where there is exactly one"
        )
    (index,) = found
    old = lines[index]
    lines[index] = badge(repository) + old[len(old.rstrip("\r\n")) :]
    return "".join(lines)


def show_or_write(repository: str | None, *, write: bool) -> int:
    """``python -m labkit binder-badge``: print the badge, say whether the README has it, and
    with `write` put it there. With no repository to name it changes nothing and says what it
    found and what to do."""
    remote = None if repository else origin_remote(README.parent)
    source = "--repository" if repository else f"the origin remote {remote}"
    repository = repository or (remote and github_repository(remote))
    if not repository:
        found = (
            f"the origin remote is {remote}, not a GitHub repository"
            if remote
            else f"{README.parent} has no origin remote (or is no git repository, or has no git)"
        )
        print(
            f"binder-badge: {found}, so there is no repository for the badge to name. Name your "
            "GitHub repository by hand: python -m labkit binder-badge --repository OWNER/NAME "
            "--write. Nothing was changed.",
            file=sys.stderr,
        )
        return 1
    text = README.read_bytes().decode("utf-8")  # not read_text: line endings stay as they are
    try:
        updated = with_badge(text, repository)
    except ValueError as exc:
        print(f"binder-badge: {README}: {exc}; nothing was changed", file=sys.stderr)
        return 1
    print(f"{badge(repository)}\n(for {repository}, from {source})")
    if updated == text:
        print(f"{README.name} has this badge.")
    elif write:
        README.write_bytes(updated.encode("utf-8"))
        print(f"{README.name}'s badge line is now this one.")
    else:
        print(f"{README.name} has another badge line; --write puts this one in its place.")
    return 0
