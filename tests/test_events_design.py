"""The design event (``bandit.events.DesignEvent``): an allocation server's variants and
weights, validated like every other event, its version checked against its weights."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.errors import EventDecodeError
from bandit.events import (
    DesignEvent,
    decode_batch,
    decode_design,
    decode_event,
    design_version,
    encode_event,
)

_name = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(weights=st.dictionaries(_name, st.floats(0.0, 1e6), min_size=1, max_size=6)
       .filter(lambda w: sum(w.values()) > 0),
       ts=st.integers(0, 2**40), exp=_name)
def test_design_event_encode_decode_is_identity(weights: dict[str, float], ts: int,
                                                exp: str) -> None:
    event = DesignEvent.of(event_id="des-1", ts_ms=ts, experiment_id=exp, weights=weights)
    assert decode_design(encode_event(event)) == event
    assert decode_event("design", encode_event(event)) == event
    assert event.key == exp.encode()


def test_design_version_depends_on_the_shares_only() -> None:
    a = design_version("e", [("gpt35", 0.9), ("bandit", 0.1)])
    assert a == design_version("e", [("bandit", 1.0), ("gpt35", 9.0)])
    assert a != design_version("e", [("gpt35", 0.5), ("bandit", 0.5)])
    assert a != design_version("other", [("gpt35", 0.9), ("bandit", 0.1)])
    # a variant with weight 0 is part of the design
    assert a != design_version("e", [("gpt35", 0.9), ("bandit", 0.1), ("uniform", 0.0)])


_GOOD = orjson.loads(encode_event(DesignEvent.of(
    event_id="des-1", ts_ms=1_000, experiment_id="e", weights={"gpt35": 0.9, "bandit": 0.1})))


@pytest.mark.parametrize(("change", "field", "description"), [
    ({"design_version": "0123456789abcdef"}, "design_version", "version of other weights"),
    ({"weights": []}, "weights", "no variant"),
    ({"weights": {"gpt35": 1.0}}, "weights", "an object instead of pairs"),
    ({"weights": [["gpt35", 1.0], ["gpt35", 2.0]]}, "weights", "a variant twice"),
    ({"weights": [["gpt35", -0.5], ["bandit", 1.0]]}, "weights[0][1]", "negative weight"),
    ({"weights": [["gpt35", True]]}, "weights[0][1]", "a boolean weight"),
    ({"weights": [["gpt35", 0.0], ["bandit", 0]]}, "weights", "weights summing to 0"),
    ({"weights": [["", 1.0]]}, "weights[0][0]", "an empty variant name"),
    ({"weights": [["gpt35"]]}, "weights[0]", "a pair of one"),
    ({"experiment_id": ""}, "experiment_id", "an empty experiment id"),
    ({"ts_ms": -1}, "ts_ms", "a negative time"),
    ({"schema_version": 2}, "schema_version", "an unknown version"),
])
def test_design_event_refuses_bad_fields(change: dict[str, object], field: str,
                                         description: str) -> None:
    raw = orjson.dumps({**_GOOD, **change})
    got = decode_batch(DesignEvent, [encode_event(decode_design(orjson.dumps(_GOOD))), raw])
    assert isinstance(got[0], DesignEvent), description
    assert isinstance(got[1], EventDecodeError), description
    assert got[1].field == field, description
    assert got[1].raw == raw
    with pytest.raises(EventDecodeError):
        decode_design(raw)


def test_design_event_example_in_the_docs_decodes() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "events.md").read_text()
    example = re.search(r"```json\n(\{[^`]*\"design_version\"[^`]*)```", text)
    assert example is not None, "docs/events.md has no DesignEvent example"
    event = decode_design(example.group(1).encode())
    assert dict(event.weights) == {"gpt35": 0.9, "bandit": 0.1}
