"""Notebook 00's first answer: what one waiting request holds, in the words of its table."""

from labkit.instruments.watch import HealthWait, WhileWaiting
from labkit.lessons.which_setup import holds_in_words

HEALTH = HealthWait(health_s=0.001, slow_s=0.2)


def test_what_a_waiting_request_holds_is_listed_as_a_reader_would() -> None:
    on_the_loop = WhileWaiting(1, 0, ("event loop",), HEALTH)
    in_a_thread = WhileWaiting(1, 1, ("AnyIO worker",), HEALTH)
    awaited = WhileWaiting(1, 0, ("aiosqlite connection",), HEALTH)
    assert holds_in_words(on_the_loop) == "the event loop + 1 connection"
    assert holds_in_words(in_a_thread) == "1 worker thread + 1 connection"
    assert holds_in_words(awaited) == "1 connection"
    assert holds_in_words(WhileWaiting(2, 2, (), HEALTH)) == "2 worker threads + 2 connections"
