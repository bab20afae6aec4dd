"""Issue 5 "Done when", in process: an extension installed from a local git repo appears,
adds its tab, its hook changes a generation, disabling removes the effect; broken
extensions leave the studio and the others working; install is refused under --listen."""
from __future__ import annotations

import json

import pytest

from modules.diffusion.params import Txt2ImgRequest
from modules.errors import AtelierError, InvalidRequest
from tests.unit.test_extensions_support import git_repo, mark_main, write_extension

RED = (255, 0, 0)


def generate(studio, **params):
    req = Txt2ImgRequest(**{"prompt": "a lighthouse", "seed": 7, "steps": 2, "width": 64, "height": 64, **params})
    job = studio.jobs.run("txt2img", req, timeout=120)
    job.raise_for_error()
    assert job.result.images, "the generation returned no images"
    return job.result


def corner(result):
    return result.images[0].image.convert("RGB").getpixel((3, 3))


def test_installed_from_git_appears_adds_tab_changes_generation_and_disable_removes_it(studio, tmp_path):
    from PIL import Image

    baseline = generate(studio)
    repo = git_repo(tmp_path / "marker-ext", mark_main("GITMARK"), name="marker-ext")

    info = studio.extensions.install(str(repo))

    assert info["status"] == "enabled", info["error"]
    assert info["source"] == "installed" and info["git"]["commit"]
    assert (studio.paths.extensions / "marker-ext" / "extension.toml").is_file()
    assert "marker-ext" in [e["name"] for e in studio.extensions.list()]
    tab = [t for t in studio.tabs.list() if t.title == "GITMARK tab"]
    assert tab and tab[0].owner == "marker-ext"

    marked = generate(studio)
    assert corner(marked) == RED and corner(baseline) != RED
    assert "Mark: GITMARK" in marked.images[0].infotext
    saved = Image.open(marked.images[0].path)
    assert saved.convert("RGB").getpixel((3, 3)) == RED  # post-processed before it was saved
    assert "Mark: GITMARK" in saved.info["parameters"]

    studio.extensions.disable("marker-ext")
    after = generate(studio)
    assert list(after.images[0].image.getdata()) == list(baseline.images[0].image.getdata())
    assert "Mark" not in after.images[0].infotext
    assert "GITMARK tab" not in [t.title for t in studio.tabs.list()]
    assert json.loads(studio.paths.config_file.read_text())["extensions_disabled"] == ["marker-ext"]

    studio.extensions.enable("marker-ext")
    assert corner(generate(studio)) == RED


def test_installed_tab_is_in_the_built_gradio_blocks(studio, tmp_path):
    from webui.ui import build_ui

    studio.extensions.install(str(git_repo(tmp_path / "tab-ext", mark_main("BLOCKSMARK"), name="tab-ext")))
    blocks = build_ui(studio)
    labels = {getattr(b, "label", None) for b in blocks.blocks.values()}
    assert {"BLOCKSMARK tab", "Extensions", "Seed explorer"} <= labels
    assert any(getattr(b, "elem_id", None) == "BLOCKSMARK_tab_text" for b in blocks.blocks.values())

    # On each page load the tab follows its extension: disabled → hidden at the next reload.
    tab = next(b for b in blocks.blocks.values() if getattr(b, "label", None) == "BLOCKSMARK tab")
    on_load = [f for f in blocks.fns.values() if tab in f.outputs]
    assert len(on_load) == 1
    assert on_load[0].fn().visible is True
    studio.extensions.disable("tab-ext")
    assert on_load[0].fn().visible is False
    assert "reloaded" in studio.extensions.enable("tab-ext")["note"]
    assert on_load[0].fn().visible is True

    # The Extensions tab's own buttons drive the same manager and show refusals as messages.
    comps = blocks.atelier_components["tab_extensions"]

    def click(button, *args):
        fn = next(f for f in blocks.fns.values() if any(t[0] == comps[button]._id for t in f.targets))
        return fn.fn(*args)

    rows, errors, _, message = click("disable", "tab-ext", "", False)
    assert "tab-ext: disabled" in message and ["tab-ext", "1.0.0"] == rows[[r[0] for r in rows].index("tab-ext")][:2]
    studio.options.listen = True
    *_, message = click("install", None, str(tmp_path / "tab-ext"), False)
    assert message.startswith("⚠️") and "--enable-insecure-extension-access" in message


def test_broken_import_and_broken_hook_leave_studio_and_others_working(studio, tmp_path):
    write_extension(tmp_path / "bad-import", "raise RuntimeError('BOOM at import')\ndef setup(api): pass\n")
    write_extension(tmp_path / "bad-hook", """
        def setup(api):
            @api.before_generate
            def worse(req):
                raise ValueError('BOOM in before_generate')
            @api.after_generate
            def broken(result):
                raise ValueError('BOOM in after_generate')
    """, priority=1)
    write_extension(tmp_path / "bad-setup", """
        def setup(api):
            api.add_tab('half registered', lambda: None)
            raise KeyError('BOOM in setup')
    """)
    write_extension(tmp_path / "good-mark", mark_main("GOOD"), priority=900)

    for name in ("bad-import", "bad-hook", "bad-setup", "good-mark"):
        studio.extensions.install(str(tmp_path / name))  # a local folder, copied

    listing = {e["name"]: e for e in studio.extensions.list()}
    assert listing["bad-import"]["status"] == "failed" and "BOOM at import" in listing["bad-import"]["error"]
    assert "Traceback" in listing["bad-import"]["error"]
    assert listing["bad-setup"]["status"] == "failed" and "BOOM in setup" in listing["bad-setup"]["error"]
    assert "half registered" not in [t.title for t in studio.tabs.list()]  # rolled back

    result = generate(studio)  # the generation goes on past the raising hooks
    assert corner(result) == RED and "Mark: GOOD" in result.images[0].infotext
    bad = studio.extensions.describe("bad-hook")
    assert bad["status"] == "error" and "BOOM in after_generate" in bad["error"]
    assert studio.extensions.describe("good-mark")["status"] == "enabled"
    assert studio.extensions.describe("example-seed-explorer")["status"] == "enabled"


def test_hooks_run_by_priority_then_name_and_bad_parameters_are_refused(studio, tmp_path):
    order = """
        def setup(api):
            @api.after_generate
            def tag(result):
                result.images[0].infotext += ', Order: ' + api.name
    """
    for name, prio in (("zz-first", 10), ("bb-second", 50), ("aa-third", 50)):
        write_extension(tmp_path / name, order, priority=prio)
        studio.extensions.install(str(tmp_path / name))
    write_extension(tmp_path / "huge-steps", """
        def setup(api):
            @api.before_generate
            def bigger(req):
                return req.model_copy(update={'steps': 10 ** 6})
    """)
    studio.extensions.install(str(tmp_path / "huge-steps"))
    write_extension(tmp_path / "saved-log", """
        def setup(api):
            @api.on_image_saved
            def log(image):
                import threading
                with open(api.data_dir / "saved.txt", "a") as f:
                    f.write(f"{image.path}|{image.seed}|{threading.current_thread().name}\\n")
    """)
    studio.extensions.install(str(tmp_path / "saved-log"))

    result = generate(studio)
    text = result.images[0].infotext
    logged = (studio.paths.root / "extensions-data" / "saved-log" / "saved.txt").read_text().splitlines()
    path, seed, thread = logged[0].split("|")
    assert len(logged) == 1 and (path, seed) == (str(result.images[0].path), "7")
    assert thread.startswith("atelier-jobs-")  # hooks run on the job worker, never in the UI's event loop
    tags = [part.split(": ")[1] for part in text.split(", ") if part.startswith("Order: ")]
    assert tags == ["zz-first", "aa-third", "bb-second"]
    assert "Steps: 2" in text  # the out-of-range change was refused, the request kept
    assert "steps" in studio.extensions.describe("huge-steps")["error"]


def test_install_refused_when_listening_unless_insecure_access(studio, tmp_path):
    repo = git_repo(tmp_path / "listen-ext", mark_main("LISTEN"), name="listen-ext")
    studio.options.listen = True
    with pytest.raises(AtelierError) as err:
        studio.extensions.install(str(repo))
    assert err.value.status == 403 and "--enable-insecure-extension-access" in err.value.message
    assert not (studio.paths.extensions / "listen-ext").exists()
    for action in (studio.extensions.update, studio.extensions.remove):
        with pytest.raises(AtelierError) as err:
            action("example-border")
        assert err.value.status == 403

    studio.options.enable_insecure_extension_access = True
    assert studio.extensions.install(str(repo))["status"] == "enabled"
    studio.options.listen, studio.options.share = False, True
    studio.options.enable_insecure_extension_access = False
    with pytest.raises(AtelierError):
        studio.extensions.remove("listen-ext")


def test_update_pulls_and_reloads_remove_deletes(studio, tmp_path):
    repo = git_repo(tmp_path / "upd-ext", mark_main("V1"), name="upd-ext")
    studio.extensions.install(str(repo))
    assert "Mark: V1" in generate(studio).images[0].infotext

    (repo / "main.py").write_text(mark_main("V2"))
    (repo / "extension.toml").write_text((repo / "extension.toml").read_text().replace("1.0.0", "1.1.0"))
    from tests.unit.test_extensions_support import commit
    commit(repo, "second version")

    info = studio.extensions.update("upd-ext")
    assert info["version"] == "1.1.0" and info["status"] == "enabled"
    text = generate(studio).images[0].infotext
    assert "Mark: V2" in text and "V1" not in text

    studio.extensions.remove("upd-ext")
    assert not (studio.paths.extensions / "upd-ext").exists()
    assert "upd-ext" not in [e["name"] for e in studio.extensions.list()]
    assert "Mark" not in generate(studio).images[0].infotext
    with pytest.raises(InvalidRequest, match="disable it instead"):
        studio.extensions.remove("example-border")


def test_border_example_settings_section_post_processes_and_persists(studio):
    assert corner(generate(studio)) != (255, 0, 255)  # shipped off: outputs untouched by default
    saved = studio.extensions.save_settings("example-border", {"enabled": True, "width": 6, "color": "#FF00FF"})
    assert saved == {"enabled": True, "width": 6, "color": "#ff00ff"}
    stored = json.loads(studio.paths.config_file.read_text())["extensions"]["example-border"]
    assert stored["width"] == 6

    result = generate(studio)
    assert corner(result) == (255, 0, 255) and "Border: 6px #ff00ff" in result.images[0].infotext
    assert result.images[0].image.getpixel((32, 32)) != (255, 0, 255)

    with pytest.raises(InvalidRequest) as err:
        studio.extensions.save_settings("example-border", {"enabled": True, "width": 4, "color": "red"})
    assert err.value.field == "color"


def test_seed_explorer_generates_consecutive_seeds_through_the_api(studio):
    api = studio.extensions.records["example-seed-explorer"].api
    result = api.txt2img(prompt="a fox", seed=5, batch_size=2, steps=2, width=64, height=64)
    assert [g.seed for g in result.images] == [5, 6]
    with pytest.raises(InvalidRequest) as err:
        api.txt2img(prompt="a fox", steps=0)
    assert err.value.field == "steps"
