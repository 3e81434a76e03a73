"""Fixtures for fuzzing the API from its own OpenAPI document: one live server for the session,
the schema as it serves it, and a tally of the cases sent, printed at the end of the run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis

from tests.fuzz.credentials import Credentials
from tests.fuzz.live_server import LiveServer, isolated_settings

# Fuzzed logins fail by the hundred from one address; the per-IP throttle has its own tests
# (tests/api) and here would only turn the credentials' own logins into 429s.
FUZZ_OVERRIDES = {"LOGIN_MAX_FAILURES_PER_IP": 1_000_000}
TALLY = pytest.StashKey[Counter]()
# Schema-violating input must be refused with one of the contract's 4xx (413 included: a body
# over the size limit is refused before it is read).
REJECTIONS = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
SCHEMATHESIS_CONFIG = {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}


@pytest.fixture(scope="session")
def fuzz_api() -> Iterator[LiveServer]:
    server = LiveServer(isolated_settings(**FUZZ_OVERRIDES)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api_schema(fuzz_api: LiveServer) -> schemathesis.BaseSchema:
    """The document the server serves, not the one built in-process: what users download."""
    config = schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
    url = f"{fuzz_api.url}/api/openapi.json"
    return schemathesis.openapi.from_url(url, config=config, timeout=30)


@pytest.fixture(scope="session")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def user_credentials(fuzz_api: LiveServer, http: requests.Session) -> Credentials:
    return Credentials("user", fuzz_api.url, http)


@pytest.fixture
def key_credentials(fuzz_api: LiveServer, http: requests.Session) -> Credentials:
    return Credentials("apiKey", fuzz_api.url, http)


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> Counter:
    """Cases sent, by credential kind and by operation."""
    return request.config.stash.setdefault(TALLY, Counter())


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    counts = config.stash.get(TALLY, None)
    if not counts:
        return
    for kind in ("user", "apiKey"):
        operations = [label for (k, label) in counts if k == kind]
        cases = sum(n for (k, _), n in counts.items() if k == kind)
        if operations:
            terminalreporter.write_line(
                f"fuzz ({kind}): {cases} cases over {len(operations)} operations"
            )
