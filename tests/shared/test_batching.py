"""Micro-batching: results in order, failures to their own batch, and at most `concurrency`
flushes at once, with arrivals joining the next batch while all are busy."""

from __future__ import annotations

import asyncio

import pytest

from shared.batching import Batcher


class Recorder:
    """A flush that takes a while, and remembers its batches and how many ran at once."""

    def __init__(self, seconds: float = 0.02, fail_on: int | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[int]] = []
        self.running = self.most_at_once = 0

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.seconds)
            if self.fail_on is not None and self.fail_on in items:
                raise ValueError(f"flush of {items} failed")
            return [item * 10 for item in items]
        finally:
            self.running -= 1


async def _submit_all(
    batcher: Batcher[int, int], count: int, arrived: list[int] | None = None
) -> list[int | BaseException]:
    async def one(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 7))  # arrivals spread over a few flushes
        if arrived is not None:
            arrived.append(i)
        return await batcher.submit(i)

    return await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_every_caller_gets_its_own_result_and_flushes_stay_within_concurrency(concurrency):
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=8, max_wait=0, concurrency=concurrency)
    batcher.start()
    arrived: list[int] = []
    try:
        results = await _submit_all(batcher, 60, arrived)
    finally:
        await batcher.stop(RuntimeError("stopped"))
    assert results == [i * 10 for i in range(60)]
    # Every item in exactly one batch, the batches started in the order the items arrived.
    assert [i for batch in recorder.batches for i in batch] == arrived
    assert all(len(batch) <= 8 for batch in recorder.batches)
    assert recorder.most_at_once == concurrency


async def test_while_every_flush_is_busy_arrivals_join_the_next_batch():
    recorder = Recorder(seconds=0.05)
    batcher = Batcher(recorder.flush, max_batch=100, max_wait=0, concurrency=2)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)  # two flushes of one item each are running now
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 12)]
        await asyncio.gather(first, second, *rest)
    finally:
        await batcher.stop(RuntimeError("stopped"))
    assert recorder.batches == [[0], [1], list(range(2, 12))]


async def test_a_failing_flush_fails_only_the_callers_in_its_batch():
    recorder = Recorder(fail_on=13)
    batcher = Batcher(recorder.flush, max_batch=4, max_wait=0, concurrency=2)
    batcher.start()
    try:
        results = await _submit_all(batcher, 40)
    finally:
        await batcher.stop(RuntimeError("stopped"))
    failed_batch = next(batch for batch in recorder.batches if 13 in batch)
    for i, result in enumerate(results):
        if i in failed_batch:
            assert isinstance(result, ValueError)
        else:
            assert result == i * 10
