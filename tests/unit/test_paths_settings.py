"""User-given names stay inside the data folders; settings survive corruption."""
import json

import pytest

from modules.errors import InvalidRequest, NotFound, PathRefused
from modules.paths import DataPaths
from modules.settings import SettingsStore


@pytest.fixture
def paths(tmp_path):
    p = DataPaths(tmp_path)
    p.ensure()
    (p.model_dir("lora") / "style.safetensors").write_bytes(b"x")
    return p


@pytest.mark.parametrize("name", ["../config.json", "../../etc/passwd", "/etc/passwd", "a/../../x", "bad\x00name", "", "  ", "..\\..\\x"])
def test_names_outside_the_folder_are_refused(paths, name):
    with pytest.raises(PathRefused) as info:
        paths.resolve_model("lora", name)
    assert info.value.field == "lora name"


def test_symlink_escape_is_refused(paths, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    (paths.model_dir("lora") / "link.safetensors").symlink_to(outside)
    with pytest.raises(PathRefused):
        paths.resolve_model("lora", "link.safetensors")


def test_names_inside_resolve(paths):
    assert paths.resolve_model("lora", "style.safetensors").name == "style.safetensors"
    with pytest.raises(NotFound):
        paths.resolve_model("lora", "missing.safetensors")


def test_data_layout_has_every_models_folder(paths):
    for folder in ("Stable-diffusion", "Lora", "VAE", "embeddings", "LLM", "VLM"):
        assert (paths.models / folder).is_dir()


def test_settings_round_trip_atomically(tmp_path):
    store = SettingsStore(tmp_path / "config.json")
    store.update({"CLIP_stop_at_last_layers": 2})
    assert json.loads((tmp_path / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2
    assert SettingsStore(tmp_path / "config.json").get().CLIP_stop_at_last_layers == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_setting_names_its_field(tmp_path):
    store = SettingsStore(tmp_path / "config.json")
    with pytest.raises(InvalidRequest) as info:
        store.update({"CLIP_stop_at_last_layers": 99})
    assert info.value.field == "CLIP_stop_at_last_layers"
    with pytest.raises(InvalidRequest) as info:
        store.update({"no_such_setting": 1})
    assert info.value.field == "no_such_setting"


def test_corrupt_config_is_kept_aside_and_defaults_load(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text("{not json")
    store = SettingsStore(cfg)
    assert store.get().CLIP_stop_at_last_layers == 1
    assert store.warning and "config.json.bak" in store.warning
    assert (tmp_path / "config.json.bak").read_text() == "{not json"


def test_a_task_section_validates_names_its_fields_and_survives_a_restart(tmp_path):
    from pydantic import BaseModel, Field

    from modules.errors import InvalidRequest
    from modules.settings import SettingsStore

    class ChatLike(BaseModel):
        temperature: float = Field(0.7, ge=0, le=2)
        system_prompt: str = ""

    store = SettingsStore(tmp_path / "config.json")
    store.add_section("chat", ChatLike)
    assert store.section("chat").temperature == 0.7
    store.update_section("chat", {"temperature": 1.1})
    with pytest.raises(InvalidRequest) as err:
        store.update_section("chat", {"temperature": 9})
    assert err.value.field == "chat.temperature"
    with pytest.raises(InvalidRequest) as err:
        store.update_section("chat", {"colour": "red"})
    assert err.value.field == "chat.colour"
    again = SettingsStore(tmp_path / "config.json")
    again.add_section("chat", ChatLike)
    assert again.section("chat").temperature == 1.1
    assert json.loads((tmp_path / "config.json").read_text())["tasks"]["chat"]["temperature"] == 1.1
