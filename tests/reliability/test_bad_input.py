"""A bad-input battery against every REST endpoint in /openapi.json: wrong types, missing fields,
out-of-range numbers, huge and empty values, broken base64, unicode and NUL bytes, path
traversal in every name field. Bad input gets a 4xx with a JSON error body — never a 500 —
and the server is alive at the end. Hypothesis adds random bodies, bounded and derandomized.
"""
from __future__ import annotations

import base64
import io
import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import assert_json_error, start

# Endpoints whose purpose is to end the process (A1111 has server-kill/-restart/-stop): not fuzzed.
NOT_FUZZED = ("kill", "restart", "stop", "shutdown")
TRAVERSAL = ["../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "a/../../b", "name\x00.safetensors",
             "%2e%2e%2f%2e%2e%2fetc%2fpasswd"]
NAME_HINTS = ("name", "checkpoint", "model", "vae", "lora", "upscaler", "outdir", "style", "script", "sampler",
              "scheduler", "embedding", "path", "file", "dir")
WEIRD = "\x00\u202e\U0001f4a5\ud7ff\ufeff\u0301 NUL+RTL"
# Fields whose valid values make a generation slow: random values for them stay invalid.
COSTLY = {"width", "height", "steps", "n_iter", "batch_size", "hr_scale", "hr_resize_x", "hr_resize_y",
          "hr_second_pass_steps", "enable_hr"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start(tmp_path_factory, demo_checkpoint)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


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


def _check(response, where: str, must_refuse: bool) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    if must_refuse or response.status_code >= 400:
        assert_json_error(response, where)


def test_malformed_bodies_refused_on_every_endpoint(client, api):
    spec, ops = api
    checked = 0
    for method, path, op in ops:
        if "{" in path or method == "GET":
            continue
        for label, raw in (("not JSON", b"{not json"), ("JSON array", b"[1, 2]"), ("JSON string", b'"x"'),
                           ("null", b"null"), ("NaN", b'{"steps": NaN}'), ("deep nesting", b"[" * 5000 + b"]" * 5000),
                           ("not UTF-8", b'{"prompt": "\xff\xfe"}')):
            r = client.request(method, path, content=raw, headers={"content-type": "application/json"})
            where = f"{method} {path} with {label}"
            if path.endswith("/options") and label in ("NaN",):
                _check(r, where, False)
            else:
                assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
                if r.status_code >= 400:
                    assert_json_error(r, where)
            checked += 1
    assert checked


def test_every_field_of_every_body_refuses_bad_values(client, api):
    spec, ops = api
    checked, failures = 0, []
    for method, path, op in ops:
        schema = _body_schema(spec, op)
        if schema is None:
            continue
        props = _props(spec, schema)
        for required in schema.get("required", []):
            body = {k: v for k, v in _base(path).items() if k != required}
            _check(client.request(method, path, json=body), f"{method} {path} without {required}", True)
        for name, prop in props.items():
            for label, value, must_refuse in _mutations(name, prop):
                body = {**_base(path), name: value}
                if name.startswith("hr_"):
                    body["enable_hr"] = True  # hires fields are read only when hires fix is on
                if label == "huge number":  # not representable as JSON by httpx' encoder in all cases
                    r = client.request(method, path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
                else:
                    r = client.request(method, path, json=body)
                try:
                    _check(r, f"{method} {path} {name}={label} {str(value)[:40]!r}", must_refuse)
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0][:300])
                checked += 1
    assert checked > 50, "the battery found too few fields: is the request schema in /openapi.json?"
    assert not failures, f"{len(failures)} bad values were not refused with a 4xx JSON error:\n" + "\n".join(failures)


def test_settings_refuse_traversal_and_bad_values(client):
    for key, value in (("outdir_txt2img_samples", "../../escape"), ("outdir_img2img_samples", "/tmp/elsewhere"),
                       ("sd_model_checkpoint", "../../../etc/passwd"), ("sd_vae", "../../x.safetensors"),
                       ("CLIP_stop_at_last_layers", 99), ("show_progress_every_n_steps", "often"),
                       ("sd_model_checkpoint", "name\x00.safetensors")):
        r = client.post("/sdapi/v1/options", json={key: value})
        assert_json_error(r, f"options {key}={value!r}")
    options = client.get("/sdapi/v1/options").json()
    assert "escape" not in str(options.get("outdir_txt2img_samples")), "a refused setting must not stick"


def test_name_fields_inside_generation_refuse_traversal(client):
    for bad in TRAVERSAL:
        r = client.post("/sdapi/v1/txt2img", json={**_base("/txt2img"), "override_settings": {"sd_model_checkpoint": bad}})
        assert_json_error(r, f"override_settings.sd_model_checkpoint={bad!r}")
        r = client.post("/sdapi/v1/txt2img", json={**_base("/txt2img"), "prompt": f"a cat <lora:{bad}:1>"})
        assert_json_error(r, f"<lora:{bad}:1>")


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
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
invalid_costly = st.one_of(st.text(max_size=5), st.integers(max_value=-1), st.integers(min_value=100_000),
                           st.lists(st.integers(), max_size=2))


def test_random_bodies_never_500(client, api):
    spec, ops = api
    targets = [(m, p, _body_schema(spec, op)) for m, p, op in ops if m != "GET" and "{" not in p]

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        method, path, schema = data.draw(st.sampled_from(targets))
        props = list(_props(spec, schema)) if schema else []
        body = dict(_base(path))
        if props:
            for key in data.draw(st.lists(st.sampled_from(props), max_size=4, unique=True)):
                body[key] = data.draw(invalid_costly if key in COSTLY else json_values)
        else:
            body = data.draw(json_values)
        r = client.request(method, path, json=body)
        _check(r, f"{method} {path} {json.dumps(body)[:200]}", False)

    check()


def test_server_alive_at_the_end(server, client):
    assert server.proc.poll() is None
    assert client.get("/atelier/health").status_code == 200
    r = client.post("/sdapi/v1/txt2img", json=_base("/txt2img"))
    assert r.status_code == 200, r.text[:300]
