"""Request deadlines: one sweeping timer for every request instead of one timer each."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.deadlines import Deadlines


async def test_an_answer_in_time_is_returned():
    deadlines = Deadlines()
    assert await deadlines.run(asyncio.sleep(0.01, result="answer"), 1.0) == "answer"


async def test_a_request_past_its_deadline_gets_timeout_error_within_a_tick():
    deadlines = Deadlines(tick=0.1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await deadlines.run(asyncio.sleep(30), 0.4)
    assert 0.4 <= time.monotonic() - started < 0.7
    # The task is usable afterwards: the cancellation was taken back.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert await deadlines.run(asyncio.sleep(0, result=1), 0.4) == 1


async def test_many_requests_each_keep_their_own_deadline():
    deadlines = Deadlines(tick=0.05)

    async def request(seconds: float) -> str:
        try:
            return await deadlines.run(asyncio.sleep(seconds, result="ok"), 0.3)
        except TimeoutError:
            return "timeout"

    results = await asyncio.gather(*(request(0.05 if i % 2 else 5) for i in range(20)))
    assert results == ["timeout", "ok"] * 10


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    deadlines = Deadlines()
    task = asyncio.create_task(deadlines.run(asyncio.sleep(30), 10.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_lifted_deadline_lets_a_long_stream_finish():
    deadlines = Deadlines(tick=0.05)

    async def export() -> str:
        deadlines.lift()
        await asyncio.sleep(0.4)
        return "all rows"

    assert await deadlines.run(export(), 0.2) == "all rows"


async def test_a_handler_that_swallows_the_cancellation_leaves_the_task_clean():
    deadlines = Deadlines(tick=0.05)

    async def stubborn() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    assert await deadlines.run(stubborn(), 0.2) == "swallowed"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_deadline_inside_another_times_out_alone():
    """The body-read deadline inside the request's: the inner one passing is the inner's
    TimeoutError, and the outer one still runs."""
    deadlines = Deadlines(tick=0.05)

    async def request() -> str:
        try:
            await deadlines.run(asyncio.sleep(5), 0.2)  # the body
        except TimeoutError:
            return "408"
        return "read"

    assert await deadlines.run(request(), 5.0) == "408"
    with pytest.raises(TimeoutError):
        await deadlines.run(deadlines.run(asyncio.sleep(5), 3.0), 0.2)
