"""Names stay inside their folders, over HTTP: real model files planted just outside models/ and
named with ../ (or an absolute path) are refused as outside — never answered "not found", which
would only mean the lookup missed — and Gradio's file route on a server without auth serves
saved outputs and nothing else (not config.json, not the models, not the code)."""
from __future__ import annotations

import shutil

import httpx
import pytest

from tests.api.conftest import assert_json_error
from tests.conftest import REPO

SMALL = {"prompt": "a fox", "steps": 1, "width": 64, "height": 64, "seed": 1}


@pytest.fixture(scope="module")
def planted(plain_server, demo_checkpoint):
    """Real, loadable files beside the folders they would have to be in."""
    from tests.fixtures_models import save_demo_lora

    data = plain_server.data_dir
    outside = data / "outside-models"
    shutil.copytree(demo_checkpoint, outside / "real-ckpt", dirs_exist_ok=True)
    save_demo_lora(data / "models" / "stray-lora.safetensors", seed=5)  # models/Lora/../stray-lora
    shutil.copy(demo_checkpoint / "vae" / "diffusion_pytorch_model.safetensors", data / "models" / "stray.vae.safetensors")
    yield data
    shutil.rmtree(outside)
    (data / "models" / "stray-lora.safetensors").unlink()
    (data / "models" / "stray.vae.safetensors").unlink()


def _refused_as_outside(response, field: str, where: str) -> dict:
    err = assert_json_error(response, case=where)
    assert response.status_code != 404 and err["error"] != "NotFound", f"{where}: refused only as not found: {err}"
    assert err.get("field") == field, f"{where}: {err}"
    assert "outside" in err["detail"], f"{where}: the message must say the name points outside: {err}"
    return err


def test_checkpoint_and_vae_names_outside_their_folders_are_refused(plain_server, planted):
    ckpts, vaes = planted / "models" / "Stable-diffusion", planted / "models" / "VAE"
    names = {"../../outside-models/real-ckpt": ckpts, str(planted / "outside-models" / "real-ckpt"): ckpts}
    for name, folder in names.items():
        assert ((folder / name).resolve() / "model_index.json").exists(), "the planted model is really there"
    with httpx.Client(base_url=plain_server.url + "/sdapi/v1", timeout=120) as c:
        before = c.get("/options").json()
        for name in names:
            _refused_as_outside(c.post("/options", json={"sd_model_checkpoint": name}), "sd_model_checkpoint",
                                f"options sd_model_checkpoint={name}")
            r = c.post("/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": name}})
            _refused_as_outside(r, "override_settings.sd_model_checkpoint", f"override {name}")
        assert (vaes / "../stray.vae.safetensors").resolve().exists()
        _refused_as_outside(c.post("/options", json={"sd_vae": "../stray.vae.safetensors"}), "sd_vae", "sd_vae")
        assert c.get("/options").json() == before, "a refused name changed the settings"


def test_lora_names_outside_the_lora_folder_are_refused(plain_server, planted):
    assert (planted / "models" / "Lora" / "../stray-lora.safetensors").resolve().exists()
    for name in ("../stray-lora", "../stray-lora.safetensors", str(planted / "models" / "stray-lora")):
        r = httpx.post(plain_server.url + "/sdapi/v1/txt2img", json={**SMALL, "prompt": f"a fox <lora:{name}:1>"},
                       timeout=120)
        _refused_as_outside(r, "prompt", f"<lora:{name}:1>")


def test_gradio_file_route_serves_outputs_and_nothing_else(plain_server):
    data = plain_server.data_dir
    with httpx.Client(base_url=plain_server.url, timeout=60) as c:
        r = c.post("/sdapi/v1/txt2img", json={**SMALL, "save_images": True})
        assert r.status_code == 200, r.text[:300]
        assert c.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1}).status_code == 200  # config.json now
        saved = max((data / "outputs").rglob("*.png"), key=lambda p: p.stat().st_mtime)
        outputs = data / "outputs"
        private = [data / "config.json", data / "cache.json", data / "server.log",
                   data / "models" / "Stable-diffusion" / "atelier-demo-sd15" / "model_index.json",
                   REPO / "README.md", REPO / "webui" / "server.py", "/etc/passwd"]
        for path in private[:4]:
            assert (data / path).exists(), f"{path} should exist for this test to mean something"
        spelled = [str(p) for p in private] + [f"{outputs}/../config.json", f"{outputs}/%2e%2e/config.json",
                                                f"{saved.parent}/../../../config.json"]
        for route in ("/gradio_api/file=", "/file="):
            assert c.get(route + str(saved)).content[:8] == b"\x89PNG\r\n\x1a\n" or route == "/file=", \
                "the saved output is served (so the refusals below are not a dead route)"
            for path in spelled:
                r = c.get(route + path)
                assert r.status_code in (403, 404), f"{route}{path}: {r.status_code} {r.text[:200]}"
                assert b"CLIP_stop_at_last_layers" not in r.content and b"root:" not in r.content
