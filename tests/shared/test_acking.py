"""Acks many per frame, in delivery order, against the real broker: every finished message is
acked exactly once (the broker closes a channel on a stale or repeated tag), a slow message
holds nobody up, and the frames sent are far fewer than the messages."""

from __future__ import annotations

import asyncio
import random
import secrets
import time

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from shared.acking import Acks

from tests.conftest import BASE_SETTINGS


@pytest.fixture
async def channel():
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    queue_name = f"{BASE_SETTINGS['BROKER_PREFIX']}acking.{secrets.token_hex(3)}"
    try:
        channel = await connection.channel()
        yield channel, queue_name
    finally:
        cleanup = await connection.channel()
        await cleanup.queue_delete(queue_name)
        await connection.close()


async def _fill(channel: aio_pika.abc.AbstractChannel, name: str, count: int) -> aio_pika.abc.AbstractQueue:
    queue = await channel.declare_queue(name, durable=False, auto_delete=False)
    for i in range(count):
        await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=name)
    return queue


async def test_out_of_order_finishes_are_each_acked_once_with_few_frames(channel, monkeypatch):
    channel, name = channel
    total = 600
    queue = await _fill(channel, name, total)
    await channel.set_qos(prefetch_count=100)
    sent = []
    original_ack = aio_pika.IncomingMessage.ack

    async def counting_ack(self, multiple=False):
        sent.append(multiple)
        await original_ack(self, multiple=multiple)

    monkeypatch.setattr(aio_pika.IncomingMessage, "ack", counting_ack)
    acks = Acks()
    rng = random.Random(7)
    done = 0
    all_done = asyncio.Event()

    async def handle(message: AbstractIncomingMessage) -> None:
        nonlocal done
        entry = acks.delivered(message)
        await asyncio.sleep(rng.choice([0, 0, 0, 0.001, 0.005, 0.05]))
        if int(message.body) % 97 == 0:
            acks.settled(entry)
            await message.reject(requeue=False)
        else:
            acks.finished(entry)
        done += 1
        if done == total:
            all_done.set()

    tag = await queue.consume(handle)
    await asyncio.wait_for(all_done.wait(), 30)
    await acks.drain()
    await queue.cancel(tag)
    await asyncio.sleep(0.2)

    assert not channel.is_closed, "the broker closed the channel: a tag was acked twice or out of order"
    declared = await channel.declare_queue(name, passive=True)
    assert declared.declaration_result.message_count == 0
    assert 0 < len(sent) < total / 3, f"{len(sent)} ack frames for {total} messages"
    assert any(sent), "no ack covered several messages"


async def test_a_slow_message_does_not_hold_back_the_others(channel):
    channel, name = channel
    total = 60
    queue = await _fill(channel, name, total)
    # A window of 10: if the finished messages behind the slow one waited for it, the window
    # would fill with them and nothing more would arrive until the slow one ends.
    await channel.set_qos(prefetch_count=10)
    acks = Acks()
    finished_at: dict[int, float] = {}
    release = asyncio.Event()
    started = time.monotonic()

    async def handle(message: AbstractIncomingMessage) -> None:
        entry = acks.delivered(message)
        number = int(message.body)
        if number == 0:
            await release.wait()
        acks.finished(entry)
        finished_at[number] = time.monotonic() - started

    tag = await queue.consume(handle)
    try:
        for _ in range(100):
            if len(finished_at) == total - 1:
                break
            await asyncio.sleep(0.05)
        assert len(finished_at) == total - 1, f"only {len(finished_at)} of the others finished"
        assert 0 not in finished_at
    finally:
        release.set()
        await asyncio.sleep(0.1)
        await acks.drain()
        await queue.cancel(tag)
    await asyncio.sleep(0.2)
    declared = await channel.declare_queue(name, passive=True)
    assert declared.declaration_result.message_count == 0
    assert not channel.is_closed
