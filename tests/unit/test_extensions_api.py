"""The rest of the v1 surface: job kinds with progress, samplers, model kinds, vision tasks,
manifests, zip installs, requirements confirmation. A Studio without a model is enough
for most of it (no load(): cheap)."""
from __future__ import annotations

import sys
import zipfile

import pytest

from modules.errors import AtelierError, InvalidRequest, PathRefused
from modules.extensions.manifest import read_manifest
from tests.unit.test_extensions_support import write_extension


@pytest.fixture
def bare(tmp_path):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=tmp_path / "data", device="cpu", build_demo=False))
    yield s
    s.shutdown()


FULL = """
from pydantic import BaseModel

def setup(api):
    def count(ctx, request):
        for i in range(request["n"]):
            ctx.progress(i + 1, request["n"], text=f"counting {i + 1}")
            if ctx.interrupted:
                break
        return {"counted": request["n"], "by": api.name}
    api.register_job_kind("count", count)
    api.add_sampler("Full DDIM", "DDIMScheduler", {"timestep_spacing": "trailing"})
    api.add_model_kind("upscaler", "FullUpscalers")
    api.add_vision_task("invert", lambda image, options: {"size": list(image.size)}, description="test")
    (api.data_dir / "state.txt").write_text("ok")
"""


def test_job_kind_sampler_model_kind_vision_task_and_their_removal(bare, tmp_path):
    write_extension(tmp_path / "full", FULL)
    info = bare.extensions.install(str(tmp_path / "full"))
    assert info["status"] == "enabled", info["error"]

    job = bare.jobs.run("count", {"n": 5}, timeout=30)
    assert job.state.value == "done" and job.result == {"counted": 5, "by": "full"}
    assert (job.progress.step, job.progress.total, job.progress.text) == (5, 5, "counting 5")

    assert "Full DDIM" in bare.samplers.names()
    sched = bare.samplers.make_scheduler("Full DDIM", {"num_train_timesteps": 1000})
    assert type(sched).__name__ == "DDIMScheduler" and sched.config.timestep_spacing == "trailing"

    folder = bare.paths.model_dir("upscaler")
    assert folder == bare.paths.models / "FullUpscalers" and folder.is_dir()
    (folder / "x4.safetensors").write_bytes(b"0" * 16)
    bare.registry.refresh("upscaler")
    assert [e.name for e in bare.registry.list("upscaler")] == ["x4.safetensors"]

    task = bare.vision_tasks.get("invert")
    assert task.owner == "full" and task.description == "test"
    assert (bare.paths.root / "extensions-data" / "full" / "state.txt").read_text() == "ok"

    bare.extensions.disable("full")
    assert "Full DDIM" not in bare.samplers.names()
    assert bare.vision_tasks.get("invert") is None
    assert "upscaler" not in bare.paths.model_kinds()
    failed = bare.jobs.run("count", {"n": 1}, timeout=30)
    assert failed.state.value == "failed" and "disabled" in failed.error and failed.error_status == 422

    bare.extensions.enable("full")  # everything comes back, without a restart
    assert bare.jobs.run("count", {"n": 2}, timeout=30).result["counted"] == 2
    assert "Full DDIM" in bare.samplers.names()


def test_extensions_cannot_take_builtin_names(bare, tmp_path):
    write_extension(tmp_path / "grabby", """
        def setup(api):
            api.register_job_kind("txt2img", lambda ctx, req: None)
    """)
    info = bare.extensions.install(str(tmp_path / "grabby"))
    assert info["status"] == "failed" and "exists already" in info["error"]
    write_extension(tmp_path / "grabby2", """
        def setup(api):
            api.add_sampler("Euler a", "EulerDiscreteScheduler")
    """)
    assert bare.extensions.install(str(tmp_path / "grabby2"))["status"] == "failed"
    assert bare.samplers.resolve("Euler a")[0].scheduler_class == "EulerAncestralDiscreteScheduler"
    write_extension(tmp_path / "escape", """
        def setup(api):
            api.add_model_kind("evil", "../../outside")
    """)
    assert bare.extensions.install(str(tmp_path / "escape"))["status"] == "failed"
    assert not (bare.paths.root.parent / "outside").exists()


def test_manifest_is_checked_and_names_the_key(tmp_path):
    write_extension(tmp_path / "ok-ext", "def setup(api): pass\n", priority=5)
    m = read_manifest(tmp_path / "ok-ext")
    assert (m.name, m.priority, m.api_version, m.entry) == ("ok-ext", 5, "1", "main.py")

    cases = [
        ({"name": "Bad Name"}, "extension.toml name"),
        ({"name": "other-name"}, "extension.toml name"),
        ({"priority": "high"}, "extension.toml priority"),
        ({"entry": "../x.py"}, "extension.toml entry"),
        ({"requirements": ["--index-url=http://evil"]}, "extension.toml requirements"),
    ]
    for i, (fields, key) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        write_extension(folder, "def setup(api): pass\n", **({"name": folder.name} | fields))
        with pytest.raises(InvalidRequest) as err:
            read_manifest(folder)
        assert err.value.field == key, fields
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "extension.toml").write_text("name = [unclosed")
    with pytest.raises(InvalidRequest, match="not valid TOML"):
        read_manifest(tmp_path / "broken")


def test_future_api_version_and_missing_requirements_fail_with_a_message(bare, tmp_path):
    write_extension(tmp_path / "future", "def setup(api): pass\n", api_version="2")
    info = bare.extensions.install(str(tmp_path / "future"))
    assert info["status"] == "failed" and "targets extension API '2'" in info["error"]

    write_extension(tmp_path / "needy", "def setup(api): pass\n", requirements=["atelier-no-such-package==1.0"])
    with pytest.raises(InvalidRequest) as err:
        bare.extensions.install(str(tmp_path / "needy"))
    assert err.value.field == "confirm_requirements" and "atelier-no-such-package==1.0" in err.value.message
    assert sys.executable in err.value.message
    assert not (bare.paths.extensions / "needy").exists()  # nothing installed without confirmation


def test_requirements_already_present_need_no_confirmation(bare, tmp_path):
    write_extension(tmp_path / "uses-pydantic", "def setup(api): pass\n", requirements=["pydantic>=2"])
    assert bare.extensions.install(str(tmp_path / "uses-pydantic"))["status"] == "enabled"


def test_zip_install_and_zip_slip_refused(bare, tmp_path):
    src = write_extension(tmp_path / "zipped", "def setup(api): api.log.info('hi')\n")
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"zipped/{f.name}")
    assert bare.extensions.install(str(archive))["status"] == "enabled"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil/extension.toml", 'name = "evil"\n')
        zf.writestr("../../escaped.py", "x = 1\n")
    with pytest.raises(PathRefused):
        bare.extensions.install(str(evil))
    assert not list(tmp_path.parent.glob("escaped.py")) and not (bare.paths.root / "escaped.py").exists()
    assert not [p for p in bare.paths.extensions.iterdir() if p.name.startswith(".install-")]  # cleaned up


def test_bad_sources_and_names_are_refused(bare, tmp_path):
    with pytest.raises(InvalidRequest) as err:
        bare.extensions.install(str(tmp_path / "nowhere"))
    assert err.value.field == "source"
    with pytest.raises(InvalidRequest):
        bare.extensions.install("")
    with pytest.raises(AtelierError):
        bare.extensions.install("file:///definitely/not/a/repo.git")
    for name in ("../etc", "a/b", "UPPER"):
        with pytest.raises(InvalidRequest):
            bare.extensions.enable(name)
    with pytest.raises(AtelierError) as err:
        bare.extensions.disable("not-installed")
    assert err.value.status == 404


def test_shipped_examples_found_with_a_custom_data_dir(bare):
    names = {e["name"]: e for e in bare.extensions.list()}
    assert names["example-border"]["source"] == "shipped" and names["example-border"]["status"] == "enabled"
    assert names["example-seed-explorer"]["tabs"] == ["Seed explorer"]
    assert names["example-border"]["has_settings"]


def test_chat_hooks_filter_typed_objects_and_skip_a_raising_one(bare, tmp_path):
    from pydantic import BaseModel

    class ChatRequest(BaseModel):  # stands in for the chat task's request type
        message: str

    write_extension(tmp_path / "chatty", """
        def setup(api):
            @api.before_chat
            def shout(req):
                return req.model_copy(update={"message": req.message.upper()})
            @api.after_chat
            def wrong_type(reply):
                return 42
    """, priority=1)
    write_extension(tmp_path / "chat-crash", """
        def setup(api):
            @api.before_chat
            def crash(req):
                raise RuntimeError("BOOM in before_chat")
    """, priority=2)
    for name in ("chatty", "chat-crash"):
        bare.extensions.install(str(tmp_path / name))

    assert bare.hooks.before_chat(ChatRequest(message="hi")).message == "HI"
    assert bare.hooks.after_chat(ChatRequest(message="reply")).message == "reply"  # 42 refused, value kept
    assert "expected ChatRequest" in bare.extensions.describe("chatty")["error"]
    assert "BOOM in before_chat" in bare.extensions.describe("chat-crash")["error"]
    bare.extensions.disable("chatty")
    assert bare.hooks.before_chat(ChatRequest(message="hi")).message == "hi"


def _tiny_wheel(folder, name="atelier_ext_testpkg", version="1.0"):
    """A pure-Python wheel built by hand, so pip can install it with no index (offline)."""
    import base64
    import hashlib

    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
             f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: atelier-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def test_confirmed_requirements_are_installed_with_the_studios_python(bare, tmp_path, monkeypatch):
    import subprocess

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _tiny_wheel(wheels)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip finds the package only in this folder
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    write_extension(tmp_path / "needs-pkg", """
        import atelier_ext_testpkg
        def setup(api):
            api.add_vision_task("pkg-answer", lambda image, options: atelier_ext_testpkg.VALUE)
    """, requirements=["atelier-ext-testpkg==1.0"])
    try:
        with pytest.raises(InvalidRequest):
            bare.extensions.install(str(tmp_path / "needs-pkg"))
        info = bare.extensions.install(str(tmp_path / "needs-pkg"), confirm_requirements=True)
        assert info["status"] == "enabled", info["error"]
        assert bare.vision_tasks.get("pkg-answer").run(None, {}) == 42
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "atelier-ext-testpkg"],
                       capture_output=True, timeout=120)
        sys.modules.pop("atelier_ext_testpkg", None)


def test_same_name_in_two_studios_loads_each_ones_own_code(bare, tmp_path):
    from modules.studio import Studio, StudioOptions

    for version in ("one", "two"):
        write_extension(tmp_path / version / "same-name", f"""
            def setup(api):
                api.add_vision_task("which", lambda image, options: "{version}")
        """)
    bare.extensions.install(str(tmp_path / "one" / "same-name"))
    other = Studio(StudioOptions(data_dir=tmp_path / "other", device="cpu", build_demo=False))
    try:
        other.extensions.install(str(tmp_path / "two" / "same-name"))
        assert other.vision_tasks.get("which").run(None, {}) == "two"
        assert bare.vision_tasks.get("which").run(None, {}) == "one"
    finally:
        other.shutdown()
