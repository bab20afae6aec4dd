"""Bad files on disk: a truncated safetensors checkpoint, a LoRA with garbage keys, pickles (a
.ckpt, a VAE .pt, embeddings .pt and .bin) whose payload would create a file, a config.json that
is not JSON. Each gets a clear error naming it, no code from a file ever runs (each payload is
first shown to run under an unsafe load), and the studio keeps serving."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.reliability.helpers import assert_json_error, body, decode_png, start
from tests.support import assert_payloads_fire, save_malicious_pickle

BROKEN_CONFIG = b'{"sd_model_checkpoint": "x", oops this is not JSON'
# Names sort after the demo model, so the studio's default checkpoint stays the demo.
TRUNCATED, PICKLE, GARBAGE_LORA = "zz-truncated.safetensors", "zz-payload.ckpt", "garbage-keys"
VAE_PICKLE, EMBEDDINGS = "zz-payload.vae.pt", ("zz-payload-emb-pt.pt", "zz-payload-emb-bin.bin")


@pytest.fixture(scope="module")
def markers(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("marker")
    return {name: folder / f"PWNED-{name}" for name in (PICKLE, VAE_PICKLE, *EMBEDDINGS)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint, markers):
    def prepare(data):
        import torch
        from safetensors.torch import save_file

        ckpts = data / "models" / "Stable-diffusion"
        weights = (demo_checkpoint / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        (ckpts / TRUNCATED).write_bytes(weights[: len(weights) // 2])
        planted = {save_malicious_pickle(ckpts / PICKLE, markers[PICKLE]): markers[PICKLE],
                   save_malicious_pickle(data / "models" / "VAE" / VAE_PICKLE, markers[VAE_PICKLE]): markers[VAE_PICKLE]}
        for name in EMBEDDINGS:  # A1111's embedding layout, plus the payload
            layout = {"string_to_param": {"*": torch.zeros(1, 32)}, "name": name}
            planted[save_malicious_pickle(data / "models" / "embeddings" / name, markers[name], layout)] = markers[name]
        assert_payloads_fire(planted)
        loras = data / "models" / "Lora"
        loras.mkdir(parents=True, exist_ok=True)
        save_file({"this.is.not.a.lora": torch.randn(4, 4), "neither_is_this": torch.randn(3)},
                  str(loras / f"{GARBAGE_LORA}.safetensors"))
        (data / "config.json").write_bytes(BROKEN_CONFIG)

    s = start(tmp_path_factory, demo_checkpoint, prepare=prepare)
    yield s
    s.stop()


def _still_serves(server) -> None:
    assert server.proc.poll() is None, server.log()
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(seed=9, steps=2), timeout=120)
    assert r.status_code == 200, r.text[:300]
    decode_png(r.json()["images"][0])


def test_broken_config_is_kept_aside_and_defaults_load(server):
    data = server.data_dir
    assert (data / "config.json.bak").read_bytes() == BROKEN_CONFIG, "the user's file is kept, byte for byte"
    options = httpx.get(server.url + "/sdapi/v1/options", timeout=10).json()
    assert options["CLIP_stop_at_last_layers"] == 1  # a default
    _still_serves(server)
    # The next save writes a valid config.json again.
    assert httpx.post(server.url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=10).status_code == 200
    assert json.loads((data / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2


def test_truncated_checkpoint_gives_a_clear_error(server):
    r = httpx.post(server.url + "/sdapi/v1/txt2img",
                   json=body(override_settings={"sd_model_checkpoint": TRUNCATED}), timeout=120)
    err = assert_json_error(r, "truncated checkpoint")
    print("truncated:", err)
    assert "zz-truncated" in json.dumps(err), f"the error names the file: {err}"
    _still_serves(server)


def test_pickle_payloads_never_run(server, markers):
    """The .ckpt, VAE .pt and embedding .pt/.bin payloads (each shown to fire under an unsafe load) never run."""
    httpx.post(server.url + "/sdapi/v1/refresh-checkpoints", timeout=60)
    listed = httpx.get(server.url + "/sdapi/v1/sd-models", timeout=60)
    assert listed.status_code == 200
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(override_settings={"sd_model_checkpoint": PICKLE}),
                   timeout=120)
    err = assert_json_error(r, "malicious pickle")
    assert "zz-payload" in json.dumps(err) and "refused" in err["detail"], f"the error names the file: {err}"
    # The VAE: choosing it is a setting; the generation that would load it is refused, naming it.
    assert httpx.post(server.url + "/sdapi/v1/options", json={"sd_vae": VAE_PICKLE}, timeout=60).status_code < 500
    try:
        r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(), timeout=120)
        err = assert_json_error(r, "malicious VAE pickle")
        assert VAE_PICKLE.removesuffix(".pt") in json.dumps(err) and err.get("field") == "sd_vae", err
    finally:
        assert httpx.post(server.url + "/sdapi/v1/options", json={"sd_vae": "Automatic"}, timeout=60).status_code == 200
    # Embeddings are loaded with the checkpoint (at start): a prompt naming them still generates.
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(prompt="a cat, zz-payload-emb-pt, zz-payload-emb-bin"),
                   timeout=120)
    assert r.status_code == 200, r.text[:300]
    _still_serves(server)
    assert [m for m in markers.values() if m.exists()] == [], "a pickle's code ran: it created its marker file"


def test_lora_with_garbage_keys_is_refused_by_name(server):
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(prompt=f"a cat <lora:{GARBAGE_LORA}:1>"), timeout=120)
    err = assert_json_error(r, "garbage LoRA")  # the README: refused by name, never a silent no-op
    assert err.get("field") == "prompt" and GARBAGE_LORA in err["detail"], f"the error names the LoRA: {err}"
    _still_serves(server)
