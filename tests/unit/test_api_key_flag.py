"""--api-key: parsed as KEY[,KEY2], refused when malformed, compared as `Authorization: Bearer KEY`."""
from __future__ import annotations

import pytest

from webui.api.auth import api_key_ok, basic_auth_ok
from webui.flags import build_parser, check_args, options_from_args, parse_keys


def test_keys_parse_and_reach_the_studio_options(tmp_path):
    assert parse_keys(None) == [] and parse_keys("sk-1") == ["sk-1"] and parse_keys("a, b") == ["a", "b"]
    parser = build_parser()
    args = parser.parse_args(["--api-key", "sk-1,sk-2"])
    check_args(parser, args)
    assert options_from_args(args, tmp_path).api_key == "sk-1,sk-2"


@pytest.mark.parametrize("value", ["", "a,,b", "has space", ","])
def test_malformed_keys_are_a_usage_error(value):
    parser = build_parser()
    args = parser.parse_args(["--api-key", value])
    with pytest.raises(SystemExit) as exc:
        check_args(parser, args)
    assert exc.value.code == 2


def test_bearer_key_check():
    keys = ["sk-1", "sk-2"]
    assert api_key_ok("Bearer sk-2", keys) and api_key_ok("bearer  sk-1 ", keys)
    assert not api_key_ok("Bearer sk-3", keys) and not api_key_ok("Basic c2stMQ==", keys)
    assert not api_key_ok(None, keys) and not api_key_ok("Bearer sk-1", [])
    assert not basic_auth_ok("Bearer sk-1", [("u", "p")])  # a key is not a user:password pair
