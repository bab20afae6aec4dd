"""A bad-input battery against every REST endpoint in /openapi.json: bodies that are not JSON
objects, wrong types, missing fields, out-of-range numbers, huge and empty values, broken
base64, unicode and NUL bytes, path traversal in every name field. Bad input gets a 4xx with a
JSON error body naming the field — never a 500 — and the server is alive at the end.
Hypothesis adds random bodies, derandomized (tests/conftest.py), a fixed number per route.
One shared server (the session's plain_server); the settings are put back afterwards.
"""
from __future__ import annotations

import base64
import io
import json
import os
from urllib.parse import quote

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.api.conftest import server_errors
from tests.conftest import REPO
from tests.reliability.helpers import assert_json_error

# Endpoints whose purpose is to end the process (A1111 has server-kill/-restart/-stop): not fuzzed.
NOT_FUZZED = ("kill", "restart", "stop", "shutdown")
TRAVERSAL = ["../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "a/../../b", "name\x00.safetensors",
             "%2e%2e%2f%2e%2e%2fetc%2fpasswd"]
NAME_HINTS = ("name", "checkpoint", "model", "vae", "lora", "upscaler", "outdir", "style", "script", "sampler",
              "scheduler", "embedding", "path", "file", "dir")
WEIRD = "\x00\u202e\U0001f4a5\ud7ff\ufeff\u0301 NUL+RTL"
# Path parameters filled with real values, so a refusal is about the body and not a 404 for "{name}".
PATH_VALUES = {"name": "example-border"}
EXAMPLES_PER_ROUTE = 40
RAW_BODIES = [("empty", b""), ("blank", b"   "), ("not JSON", b"{not json"), ("JSON array", b"[1, 2]"),
              ("JSON string", b'"x"'), ("number", b"123"), ("null", b"null"), ("true", b"true"),
              ("NaN", b'{"steps": NaN}'), ("Infinity", b'{"steps": Infinity}'), ("not UTF-8", b'{"prompt": "\xff\xfe"}'),
              ("deep array", b"[" * 50_000 + b"]" * 50_000), ("deep object", b'{"a": ' * 5000 + b"1" + b"}" * 5000)]
# Fields whose valid values make a generation slow: random values for them stay invalid.
COSTLY = {"width", "height", "steps", "n_iter", "batch_size", "hr_scale", "hr_resize_x", "hr_resize_y",
          "hr_second_pass_steps", "enable_hr"}


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        options = c.get("/sdapi/v1/options").json()
        border = c.get(f"/atelier/extensions/{PATH_VALUES['name']}/settings").json()
        yield c
        # Random bodies may hold valid settings: put the shared server's back as they were.
        assert c.post("/sdapi/v1/options", json=options).status_code == 200
        assert c.post(f"/atelier/extensions/{PATH_VALUES['name']}/settings", json=border).status_code == 200


def _fill(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no real value for a path parameter of {path}: add it to PATH_VALUES"
    return path


@pytest.fixture(scope="module")
def api(client):
    spec = client.get("/openapi.json").json()
    ops = []
    for path, methods in spec["paths"].items():
        if any(word in path for word in NOT_FUZZED):
            continue
        for method, op in methods.items():
            if method in ("get", "post", "put", "patch", "delete"):
                ops.append((method.upper(), path, op))
    assert any(p == "/sdapi/v1/txt2img" for _, p, _ in ops)
    return spec, ops


def _png_b64(side: int = 64) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _resolve(spec: dict, schema: dict, root: dict | None = None) -> dict:
    root = root or schema
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        target = spec if ref.startswith("#/components") else root
        for part in ref.lstrip("#/").split("/"):
            target = target.get(part, {})
        schema = target
    return schema or {}


def _body_schema(spec: dict, op: dict) -> dict | None:
    content = (op.get("requestBody") or {}).get("content", {})
    schema = (content.get("application/json") or {}).get("schema")
    return _resolve(spec, schema) if schema else None


def _props(spec: dict, schema: dict) -> dict:
    return {k: _resolve(spec, v, schema) for k, v in (schema.get("properties") or {}).items()}


def _types(prop: dict) -> set[str]:
    if "type" in prop:
        return {prop["type"]} if isinstance(prop["type"], str) else set(prop["type"])
    return {t.get("type") for t in prop.get("anyOf", []) + prop.get("oneOf", []) if isinstance(t, dict)} - {None}


def _base(path: str) -> dict:
    """A small valid body, so a one-field mutation is the only thing wrong with it."""
    if path.endswith("/txt2img"):
        return {"prompt": "x", "width": 64, "height": 64, "steps": 1}
    if path.endswith("/img2img"):
        return {"prompt": "x", "width": 64, "height": 64, "steps": 1, "init_images": [_png_b64()], "denoising_strength": 0.5}
    if path.endswith("/png-info"):
        return {"image": _png_b64()}
    if path.endswith("/atelier/v1/models/load"):
        return {"kind": "checkpoint", "name": "atelier-demo-sd15"}
    if path.endswith("/atelier/v1/models/unload"):
        return {"kind": "lora"}  # no name: every idle LoRA (none are resident), so nothing the other tests use goes
    if path.endswith("/atelier/v1/vision"):
        return {"task": "caption", "image": _png_b64()}
    if path.endswith("/atelier/v1/models/download"):  # a port nothing listens on: an accepted one fails at once
        return {"source": "http://127.0.0.1:9/x.safetensors", "kind": "lora"}
    if path.endswith("/interrogate"):
        return {"image": _png_b64()}
    if path.endswith("/extra-single-image"):  # an Extras body needs something to do: Lanczos is the cheapest
        return {"image": _png_b64(), "upscaler_1": "Lanczos"}
    if path.endswith("/extra-batch-images"):
        return {"imageList": [{"data": _png_b64(), "name": "a.png"}], "upscaler_1": "Lanczos"}
    if path.endswith("/atelier/v1/vision/batch"):
        return {"task": "caption", "images": [_png_b64()], "max_new_tokens": 1}
    if path.endswith("/atelier/v1/vision/video"):  # three 32x32 frames: a caption job of one frame, one token
        from tests.video_support import b64_video, rectangle_video

        return {"task": "caption", "video": b64_video(rectangle_video(3, size=(32, 32), step=0)), "frames": 1,
                "max_new_tokens": 1}
    if path.endswith("/extensions/install"):  # well-formed, and refused (nothing there) if it ever got that far
        return {"source": "/nonexistent/atelier-test-extension"}
    return {}


def _mutations(name: str, prop: dict):
    """(label, value, must_refuse): values that are wrong for this field."""
    types = _types(prop)
    if types & {"integer", "number"}:
        yield "wrong type", "abc", True
        yield "wrong type", [1, 2], True
        if "maximum" in prop or "exclusiveMaximum" in prop:
            yield "above maximum", 10**12, True
        if "minimum" in prop or "exclusiveMinimum" in prop:
            yield "below minimum", -(10**12), True
        yield "huge number", 10**400, False
    if "string" in types:
        yield "wrong type", {"a": 1}, True
        if "maxLength" in prop:
            yield "too long", "a" * (prop["maxLength"] + 1), True
        yield "1 MB string", "a" * 1_000_000, False
        yield "unicode and NUL", WEIRD, False
        if prop.get("format") == "base64" or "image" in name:
            yield "broken base64", "!!!not base64", True
            yield "truncated PNG", _png_b64()[:40], True
            yield "empty", "", True
        if any(h in name.lower() for h in NAME_HINTS):
            for bad in TRAVERSAL:
                yield "path traversal", bad, True
    if "boolean" in types:
        yield "wrong type", "maybe", True
    if "array" in types:
        yield "wrong type", "not a list", True
        if prop.get("maxItems"):
            yield "too many items", [None] * (prop["maxItems"] + 1), True
        items = prop.get("items") or {}
        if items.get("format") == "base64" or "image" in name:
            yield "broken base64 item", ["!!!not base64"], True
    if "object" in types:
        yield "wrong type", [1, 2], True


def _check(response, where: str, must_refuse: bool, field: str | None = None) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    if must_refuse or response.status_code >= 400:
        err = assert_json_error(response, where)
        if must_refuse:
            assert response.status_code != 404, f"{where}: a 404 is not a refusal of the value: {err}"
        if must_refuse and field is not None:
            named = str(err.get("field") or "")
            assert named == field or named.startswith(field + ".") or named.endswith("." + field), \
                f"{where}: the error names {named!r}, not {field!r}: {err}"


def test_bodies_that_are_not_json_objects_are_refused_naming_the_body(client, api):
    spec, ops = api
    # Every operation that declares a JSON body, and POST /options (it reads its body itself, as A1111's
    # free-form options object, so /openapi.json shows no schema for it).
    with_body = sorted({(m, p) for m, p, op in ops if m != "GET" and _body_schema(spec, op) is not None}
                       | {("POST", "/sdapi/v1/options")})
    optional = {(m, p) for m, p, op in ops if op.get("requestBody") and not op["requestBody"].get("required")}
    assert {("POST", "/sdapi/v1/txt2img"), ("POST", "/sdapi/v1/img2img"), ("POST", "/sdapi/v1/png-info"),
            ("POST", "/atelier/extensions/install"), ("POST", "/atelier/extensions/{name}/settings")} <= set(with_body)
    for method, path in with_body:
        for label, raw in RAW_BODIES:
            r = client.request(method, _fill(path), content=raw, headers={"content-type": "application/json"})
            where = f"{method} {path} with {label}"
            if label in ("empty", "blank", "null") and (method, path) in optional:
                _check(r, where, False)  # no body (or null) is what an optional body allows
                continue
            if label in ("NaN", "Infinity") and not path.startswith("/sdapi/"):
                # FastAPI's lenient JSON parser reads NaN; those routes may then refuse (or ignore) the
                # unknown field instead. The A1111 routes parse strictly and refuse the body, below.
                _check(r, where, False)
                continue
            err = assert_json_error(r, where)
            assert r.status_code != 404 and err.get("field") == "body", f"{where}: {r.status_code} {err}"


def test_every_field_of_every_body_refuses_bad_values(client, api):
    spec, ops = api
    checked, failures = 0, []
    for method, path, op in ops:
        schema = _body_schema(spec, op)
        if schema is None:
            continue
        url = _fill(path)
        props = _props(spec, schema)
        for required in schema.get("required", []):
            body = {k: v for k, v in _base(path).items() if k != required}
            try:
                _check(client.request(method, url, json=body), f"{method} {path} without {required}", True, required)
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0][:300])
        for name, prop in props.items():
            for label, value, must_refuse in _mutations(name, prop):
                body = {**_base(path), name: value}
                if name.startswith("hr_"):
                    body["enable_hr"] = True  # hires fields are read only when hires fix is on
                if label == "huge number":  # not representable as JSON by httpx' encoder in all cases
                    r = client.request(method, url, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
                else:
                    r = client.request(method, url, json=body)
                try:
                    _check(r, f"{method} {path} {name}={label} {str(value)[:40]!r}", must_refuse, name)
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0][:300])
                checked += 1
    assert checked > 50, "the battery found too few fields: is the request schema in /openapi.json?"
    assert not failures, f"{len(failures)} bad values were not refused with a 4xx JSON error naming the field:\n" + \
        "\n".join(failures)


def test_query_and_path_parameters(client, api):
    spec, ops = api
    for method, path, op in ops:
        params = [p for p in op.get("parameters", []) if p.get("in") in ("query", "path")]
        for p in params:
            for value in ("abc", "-1", "1e309", "", WEIRD, "../../etc/passwd", "x" * 10_000):
                url = path
                query = {}
                if p["in"] == "path":
                    url = path.replace("{" + p["name"] + "}", quote(value, safe="") or "%20")
                else:
                    query[p["name"]] = value
                if method == "GET" or p["in"] == "path":
                    r = client.request(method, url, params=query)
                    _check(r, f"{method} {path} {p['name']}={value[:20]!r}", False)
    for unknown in ("/sdapi/v1/nope", "/sdapi/v1/../../etc/passwd", "/sdapi/v1/txt2img/extra"):
        r = client.get(unknown)
        assert r.status_code < 500 and r.status_code >= 400, (unknown, r.status_code)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
invalid_costly = st.one_of(st.text(max_size=5), st.integers(max_value=-1), st.integers(min_value=100_000),
                           st.lists(st.integers(), max_size=2))


def _fuzz_targets() -> list[str]:
    return ["/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/png-info", "/sdapi/v1/options",
            "/atelier/extensions/install", "/atelier/extensions/{name}/settings"]


@pytest.mark.parametrize("path", _fuzz_targets())
def test_random_bodies_never_500(client, api, path):
    spec, ops = api
    (schema,) = [_body_schema(spec, op) for m, p, op in ops if p == path and m == "POST"]
    props = list(_props(spec, schema)) if schema else []
    keys = st.sampled_from(props) | st.text(max_size=8) if props else st.text(max_size=8)

    @settings(max_examples=EXAMPLES_PER_ROUTE)
    @given(st.data())
    def check(data):
        body = dict(_base(path))
        for key in data.draw(st.lists(keys, max_size=5, unique=True)):
            body[key] = data.draw(invalid_costly if key in COSTLY else json_values)
        source = body.get("source")
        if isinstance(source, str):  # never install a real folder that happens to exist
            assume(not source.strip() or not (os.path.exists(source) or (REPO / source).exists()))
        r = client.request("POST", _fill(path), json=body)
        _check(r, f"POST {path} {json.dumps(body)[:200]}", False)

    check()


def test_server_alive_at_the_end(server, client):
    assert server.proc.poll() is None
    assert client.get("/atelier/health").status_code == 200
    r = client.post("/sdapi/v1/txt2img", json=_base("/txt2img"))
    assert r.status_code == 200, r.text[:300]
    assert server_errors(server) == []
