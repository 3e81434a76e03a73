"""bcrypt and QR rendering run in the API's CPU pool at a lower priority than the event loop, so
during a login storm the loop (health probes, verifications) is never queued behind them."""

from __future__ import annotations

import os
import threading

from api.app import CPU_POOL_NICENESS
from api.keys import OFFLOAD


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_offloaded_work_runs_below_the_event_loop(client):
    offload = client.server.app[OFFLOAD]
    loop_niceness = _niceness()
    pool_niceness = await offload(_niceness)
    assert pool_niceness == min(19, loop_niceness + CPU_POOL_NICENESS) > loop_niceness
    assert _niceness() == loop_niceness  # the loop's own thread is untouched
