"""response_format enforced while decoding (llguidance): the demo's random weights still produce JSON
that parses and validates against a bounded schema (booleans, enums, short strings)."""
from __future__ import annotations

import json
import re

import pytest
from jsonschema import validate

from modules.chat.params import ChatRequest, parse
from modules.errors import InvalidRequest
from modules.jobs import JobState
from tests.unit.chat_support import chat

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "color", "name", "count"],
          "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]},
                         "name": {"type": "string", "maxLength": 6},
                         "count": {"type": "integer", "minimum": 0, "maximum": 99}}}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_parses_and_validates(chat_studio, seed):
    job = chat(chat_studio, messages=[{"role": "user", "content": "Give me JSON."}], temperature=1.0, seed=seed,
               max_new_tokens=80, response_format={"type": "json_schema", "json_schema": SCHEMA})
    assert job.state == JobState.DONE, job.error
    r = job.result
    data = json.loads(r.text)
    validate(data, SCHEMA)
    assert r.finish_reason == "stop" and r.stopped_by == "eos"
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', r.text)
    assert not re.search(r"\s", outside_strings), r.text  # compact: no free whitespace between tokens


def test_json_object_starts_an_object(chat_studio):
    r = chat(chat_studio, messages=[{"role": "user", "content": "JSON please"}], temperature=0,
             max_new_tokens=40, response_format={"type": "json_object"}).result
    assert r.text.startswith("{")
    if r.finish_reason == "stop":
        assert isinstance(json.loads(r.text), dict)


@pytest.mark.parametrize("schema", [{"type": "nonsense"}, {"properties": {"a": {"minLength": -1}}},
                                    {"type": "object", "required": "ok"}])
def test_a_schema_that_is_not_a_json_schema_is_refused(schema):
    with pytest.raises(InvalidRequest) as err:
        parse(ChatRequest, {"messages": [{"role": "user", "content": "x"}],
                            "response_format": {"type": "json_schema", "json_schema": schema}})
    assert err.value.field.startswith("response_format")
    assert "not a valid JSON schema" in err.value.message
