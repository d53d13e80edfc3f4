"""The exercise check: "not answered yet" while a ``...`` is left, then the measurement's word."""

from __future__ import annotations

import pytest

from labkit.lessons.exercises import check, expect, solution_of, unanswered

pytestmark = pytest.mark.anyio


def skeleton(session: object) -> object:
    return ...  # the reader's query goes here


def answered(session: object) -> object:
    return session  # a "..." in a string or a comment does not count: "..."


def test_an_answer_is_unanswered_while_an_ellipsis_is_left_in_it() -> None:
    assert unanswered(...) and unanswered((1, ...)) and unanswered({"size": ...})
    assert unanswered(skeleton)
    assert not unanswered(answered) and not unanswered(100) and not unanswered([1, 2])


async def test_the_check_measures_only_an_answered_exercise() -> None:
    calls: list[object] = []

    def measure(size: int) -> tuple[str, list[str]]:
        calls.append(size)
        statements = 1 + -(-1000 // size)
        return f"{statements} statements", expect((statements == 11, f"{statements}, not 11"))

    waiting = await check("1", ..., measure)
    assert not waiting.answered and calls == [] and "not answered yet" in str(waiting)
    wrong = await check("1", 500, measure)
    assert wrong.answered and not wrong.right and "3, not 11" in str(wrong)
    right = solution_of(await check("1", 100, measure))
    assert right.right and str(right) == "Exercise 1: right. Measured: 11 statements."
    with pytest.raises(AssertionError, match="3, not 11"):
        solution_of(wrong)


async def test_an_answer_that_raises_is_not_yet_right_and_the_error_says_why() -> None:
    async def measure(size: int) -> tuple[str, list[str]]:
        raise ValueError(f"no chunk size {size}")

    verdict = await check("2", 0, measure)
    assert verdict.answered and not verdict.right
    assert verdict.problems == ("it raised ValueError: no chunk size 0",)
