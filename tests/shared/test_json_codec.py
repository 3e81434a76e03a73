"""The fast JSON encoder writes the same bytes as the standard library's compact form, so the
audit chain's hashes, the webhook bodies (what `JSON.stringify` recomputes) and the stored jsonb
do not depend on which of the two wrote them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared import json_codec

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
leaves = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | text
documents = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=25,
)


def _stdlib(value, sort_keys=False):
    return json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=3000, deadline=None)
@given(documents)
def test_same_bytes_as_the_standard_library(document):
    assert json_codec.dumps(document) == _stdlib(document)
    assert json_codec.dumps(document, sort_keys=True) == _stdlib(document, sort_keys=True)
    assert json_codec.loads(json_codec.dumps(document)) == document


def test_what_orjson_cannot_write_falls_back_to_the_standard_library():
    huge = {"n": 2**70, 1: "integer key"}
    assert json_codec.dumps(huge) == _stdlib(huge)
    assert json_codec.loads(b'{"n": 1180591620717411303424}') == {"n": 2**70}


def test_datetimes_and_uuids_in_responses():
    moment = datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=UTC)
    some_id = uuid.UUID(int=1)
    assert json_codec.dumps({"at": moment, "id": some_id}, utc_z=True) == (
        b'{"at":"2026-12-01T12:00:00.123000Z","id":"00000000-0000-0000-0000-000000000001"}'
    )
