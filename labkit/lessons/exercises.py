"""Exercises you answer in a notebook cell, and the check under each that measures your answer.

An exercise cell holds a skeleton: ``...`` stands where your code goes. The cell under it calls
`check(title, answer, measure)`. While a ``...`` is left in the answer, the check says "not
answered yet" and asks for nothing more, so a notebook run top to bottom (and its test) passes
the skeleton. Once it is answered, `measure` runs your answer against the app and returns what it
measured and what is still wrong; the check says "right", or lists what is not yet.

The worked solution, collapsed further down, calls the same check on its own answer and asserts
that it is right: a check that could not tell right from wrong would fail there.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FunctionType
from typing import TypeVar

Answer = TypeVar("Answer")

PLACEHOLDER = re.compile(r"(?<![\w.])\.\.\.(?![\w.])")
"""A ``...`` in a line of code: Python's Ellipsis, not part of a longer name or a slice."""


def unanswered(answer: object) -> bool:
    """Whether `answer` still holds the skeleton's ``...``: the Ellipsis itself, inside a tuple,
    list, set or dict, or in the code of a function (a comment's ``...`` does not count)."""
    if answer is Ellipsis:
        return True
    if isinstance(answer, Mapping):
        return any(unanswered(value) for value in answer.values())
    if isinstance(answer, (tuple, list, set, frozenset)):
        return any(unanswered(item) for item in answer)
    if isinstance(answer, FunctionType):
        return _code_has_placeholder(answer)
    return False


def _code_has_placeholder(function: FunctionType) -> bool:
    """Whether the source of `function` still has a ``...`` outside comments and strings.

    The source is read back (IPython keeps each cell's source for `inspect`), since a function
    whose body is ``...`` compiles to the same code as one whose body is ``pass``."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # no source to read: judge it by what it does
        return False
    for line in source.splitlines():
        code = re.sub(r"(\"[^\"]*\"|'[^']*')", "", line).split("#", 1)[0]
        if PLACEHOLDER.search(code):
            return True
    return False


@dataclass(frozen=True)
class Verdict:
    """What the check found: not answered yet, right, or what is still wrong, with what it
    measured. Shown as one line or a short list; `right` is what a solution asserts."""

    exercise: str
    answered: bool
    measured: str = ""
    problems: tuple[str, ...] = ()

    @property
    def right(self) -> bool:
        return self.answered and not self.problems

    def __str__(self) -> str:
        if not self.answered:
            return (
                f"Exercise {self.exercise}: not answered yet. Replace each ... in the cell "
                "above with your answer, run it, then run this cell again."
            )
        measured = f" Measured: {self.measured}." if self.measured else ""
        if not self.problems:
            return f"Exercise {self.exercise}: right.{measured}"
        still = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"Exercise {self.exercise}: not yet.{measured}\n{still}"

    def __repr__(self) -> str:  # what a cell ending in check(...) shows
        return str(self)


Measured = tuple[str, Iterable[str]]
"""What a `measure` function returns: what it measured, in words, and each thing still wrong."""


async def check(
    exercise: str,
    answer: Answer,
    measure: Callable[[Answer], Measured | Awaitable[Measured]],
) -> Verdict:
    """Judge `answer` to `exercise` by measuring it: ``await check(...)`` in the cell under the
    exercise.

    `measure(answer)` runs the answer (a plain function, or an ``async def`` one that sends
    requests) and returns what it measured, in words, and each thing still wrong. It is only
    called once no ``...`` is left, so it may use the answer freely. An answer that raises is not
    yet right: the error is what is still wrong, and nothing is lost.
    """
    if unanswered(answer):
        return Verdict(exercise, answered=False)
    try:
        outcome = measure(answer)
        measured, problems = await outcome if inspect.isawaitable(outcome) else outcome
    except Exception as error:  # the reader's code failed: say how, in the verdict
        return Verdict(exercise, True, problems=(f"it raised {type(error).__name__}: {error}",))
    return Verdict(exercise, True, measured, tuple(problems))


def expect(*pairs: tuple[bool, str]) -> list[str]:
    """The messages of the conditions that do not hold: ``expect((n == 11, f"{n} statements,
    not 11"), ...)`` in a `measure` function."""
    return [message for holds, message in pairs if not holds]


def solution_of(verdict: Verdict) -> Verdict:
    """`verdict`, after asserting that it is right: what a worked solution ends with."""
    assert verdict.right, str(verdict)
    return verdict


__all__ = ["Verdict", "check", "expect", "solution_of", "unanswered"]
