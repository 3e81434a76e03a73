"""Every operation in the served OpenAPI document, fuzzed by schemathesis (data that fits the
schema and data that does not) against a live server: once with a user's access token, once with
an API key holding every scope. No response may be a 5xx, every response must be one the document
describes (a documented status code, its content type, a body matching its schema), and input
that breaks the schema must be refused with a 4xx.

FUZZ_EXAMPLES sets the examples per operation and credential (default 50: about 3,600 requests,
under a minute). The seed is fixed (FUZZ_SEED, default 0), so a failure reproduces; another
seed explores other inputs.

Cases come from schemathesis's Hypothesis strategies (`APIOperation.as_strategy`) rather than its
pytest loader, whose lazy mode fails under pytest 9 (it sets `Function._nodeid`, gone in 9)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.auths import AuthStorage
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.keys import OPENAPI
from tests.conftest import make_settings
from tests.fuzz.credentials import Credentials
from tests.fuzz.live_server import LiveServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large
    ],
)


def operation_labels(document: dict) -> list[str]:
    return sorted(
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


# Known at collection time, without a server: the document is built from the route table.
OPERATIONS = operation_labels(create_app(make_settings())[OPENAPI])


def authenticated_by_header(operation: schemathesis.APIOperation) -> bool:
    """Protected, and by the request's headers alone (not a tempToken in the body)."""
    security = operation.definition.raw.get("security") or []
    return bool(security) and {} not in security


def carried_ours(sent: Mapping[str, str], ours: dict[str, str]) -> bool:
    """Whether the request went out with our credential as the one the server reads (X-API-Key
    wins over Authorization, so a generated X-API-Key would shadow a user token)."""
    if "X-API-Key" in ours:
        return sent.get("X-API-Key") == ours["X-API-Key"]
    return "X-API-Key" not in sent and sent.get("Authorization") == ours.get("Authorization")


@dataclass
class CredentialsAuth:
    """A schemathesis auth provider: our credential on every case, except the negative cases
    that remove or mangle a security header, which schemathesis leaves as they are."""

    credentials: Credentials
    label: str

    def get(self, case: schemathesis.Case, context: Any) -> dict[str, str]:
        return self.credentials.headers_for(self.label)

    def set(self, case: schemathesis.Case, data: dict[str, str], context: Any) -> None:
        case.headers = {**(case.headers or {}), **data}


def fuzz(
    api_schema: schemathesis.BaseSchema,
    label: str,
    api: LiveServer,
    credentials: Credentials,
    http: requests.Session,
    tally: Counter,
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    auth = AuthStorage(providers=[CredentialsAuth(credentials, label)])
    strategy = operation.as_strategy(
        GenerationMode.POSITIVE, auth_storage=auth
    ) | operation.as_strategy(GenerationMode.NEGATIVE, auth_storage=auth)

    @FUZZ_SETTINGS
    @seed(SEED)
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=api.url, session=http, timeout=30)
        tally[(credentials.kind, label)] += 1
        case.validate_response(response, checks=CHECKS)
        ours = credentials.current(label)
        if (
            response.status_code == 401
            and authenticated_by_header(operation)
            and carried_ours(response.request.headers, ours)
        ):
            # A 401 about the request (a bad refresh token in the body, say) is fine; one
            # because a case before this one ended our credential would hollow out the run.
            assert credentials.accepted(ours), f"our {credentials.kind} stopped working"

    run()


def test_every_served_operation_is_fuzzed(api_schema):
    assert operation_labels(api_schema.raw_schema) == OPERATIONS


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_with_a_user_token(label, api_schema, fuzz_api, user_credentials, http, tally):
    fuzz(api_schema, label, fuzz_api, user_credentials, http, tally)


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_with_an_api_key(label, api_schema, fuzz_api, key_credentials, http, tally):
    fuzz(api_schema, label, fuzz_api, key_credentials, http, tally)
