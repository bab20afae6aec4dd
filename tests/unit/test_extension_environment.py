"""An extension's own Python environment (extension.toml `environment`): its lock file holds exact pins
only; when the extension's check says the studio's Python cannot host it, enabling refuses until the
user confirms, then builds the environment — the package lands there, never in the studio's Python —
and the extension runs its child processes with that environment's interpreter (`api.python`)."""
from __future__ import annotations

import importlib.util

import pytest

from modules.errors import InvalidRequest
from modules.extensions.environment import ExtensionEnvironment, read_lock
from tests.unit.test_extensions_api import _tiny_wheel
from tests.unit.test_extensions_support import write_extension

USES_ITS_PYTHON = """
import subprocess

def setup(api):
    def answer(image, options):
        code = "import atelier_ext_testpkg, sys; print(atelier_ext_testpkg.VALUE, sys.prefix)"
        done = subprocess.run([str(api.python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
        value, prefix = done.stdout.split()
        return {"text": value, "notes": [prefix]}
    api.add_vision_task("env-answer", answer)
"""


def test_the_lock_file_holds_exact_pins_only(tmp_path):
    lock = tmp_path / "environment.txt"
    lock.write_text('# comment\ntorch==2.14.1\n\nnvidia-nccl-cu13==2.30.7 ; platform_system == "Linux"  # why\n')
    assert read_lock(lock) == ["torch==2.14.1", 'nvidia-nccl-cu13==2.30.7; platform_system == "Linux"']
    for bad in ("torch>=2.14", "--index-url https://example.org/simple", "torch @ https://example.org/t.whl",
                "torch==2.*", "-r other.txt", "torch"):
        lock.write_text(f"numpy==2.4.6\n{bad}\n")
        with pytest.raises(InvalidRequest) as refused:
            read_lock(lock)
        assert refused.value.field == "extension.toml environment" and "line 2" in refused.value.message, bad


@pytest.fixture
def offline_wheels(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _tiny_wheel(wheels)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip finds the package only in this folder
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def own_env_extension(folder, reason: str | None):
    write_extension(folder, USES_ITS_PYTHON, requirements=["atelier-ext-testpkg==1.0"],
                    environment="environment.txt", environment_check="check:problem")
    (folder / "environment.txt").write_text("atelier-ext-testpkg==1.0\n")
    (folder / "check.py").write_text(f"def problem():\n    return {reason!r}\n")
    return folder


def test_enabling_builds_the_environment_only_when_confirmed_and_runs_with_its_python(tmp_path, offline_wheels):
    from modules.studio import Studio, StudioOptions

    envs = tmp_path / "envs"
    studio = Studio(StudioOptions(data_dir=tmp_path / "data", device="cpu", build_demo=False, extension_envs=envs))
    try:
        source = own_env_extension(tmp_path / "own-env", "the studio's torch is the wrong build.")
        info = studio.extensions.install(str(source))
        assert info["status"] == "failed" and "the studio's torch is the wrong build." in info["error"]
        assert str(envs / "own-env") in info["error"] and "confirm_requirements" in info["error"]
        assert info["environment"]["ready"] is False and info["environment"]["folder"] == str(envs / "own-env")
        with pytest.raises(InvalidRequest) as refused:
            studio.extensions.update("own-env")  # not from git: refused before anything is built
        assert refused.value.field == "name"
        assert not (envs / "own-env").exists(), "nothing is built without confirmation"

        info = studio.extensions.enable("own-env", confirm_requirements=True)
        assert info["status"] == "enabled", info["error"]
        assert info["environment"]["ready"] is True and info["environment"]["reason"].startswith("the studio's torch")
        answer = studio.vision_tasks.get("env-answer").run(None, {})
        assert answer["text"] == "42" and answer["notes"] == [str(envs / "own-env")]
        assert importlib.util.find_spec("atelier_ext_testpkg") is None, "the studio's own Python is untouched"

        env = ExtensionEnvironment(envs / "own-env", source / "environment.txt")
        assert env.build() == {"built": False, "seconds": 0.0}, "a ready environment is kept"
        (studio.paths.extensions / "own-env" / "environment.txt").write_text("atelier-ext-testpkg==1.0\n# v2\n")
        assert studio.extensions.disable("own-env")["status"] == "disabled"
        assert studio.extensions.enable("own-env")["status"] == "enabled", "a comment changes no pin"
    finally:
        studio.shutdown()


def test_without_a_reason_the_requirements_go_to_the_studios_python(tmp_path, offline_wheels):
    from modules.studio import Studio, StudioOptions

    studio = Studio(StudioOptions(data_dir=tmp_path / "data", device="cpu", build_demo=False,
                                  extension_envs=tmp_path / "envs"))
    try:
        info = studio.extensions.install(str(own_env_extension(tmp_path / "own-env", None)))
        assert info["status"] == "failed" and "not installed: atelier-ext-testpkg==1.0" in info["error"]
        assert info["environment"] is None and not (tmp_path / "envs").exists()
    finally:
        studio.shutdown()
