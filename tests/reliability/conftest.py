"""The fault runs' system: private PostgreSQL, Redis and RabbitMQ (never the shared ones, which
other runs use), an SMTP server for the notifier, and the four services as processes on top,
started once per module and removed with everything they wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.reliability.report import LEGEND, RESULTS, table
from tests.reliability.system import Stack, running_stack


@pytest_asyncio.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack() as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("fault runs (tests/reliability)")
        terminalreporter.write_line(table(RESULTS))
        terminalreporter.write_line(LEGEND)
