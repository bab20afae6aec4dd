"""Prompt styles: A1111's styles.csv read and written, `{prompt}` merging, styles applied by jobs and
taken back out of an infotext, unknown names refused."""
import threading

import numpy as np
import pytest

from modules.diffusion import infotext
from modules.diffusion.params import Txt2ImgRequest
from modules.diffusion.styles import PromptStyle, StyledPrompts, StyleStore, apply, merge
from modules.errors import InvalidRequest
from modules.jobs import JobState

A1111_FILE = ('\ufeffname,prompt,negative_prompt\r\n'
              '"cinematic","cinematic still of {prompt}, film grain","cartoon, drawing"\r\n'
              '# a comment row,ignored,\r\n'
              'sharp, "sharp, detailed", blurry\r\n'
              '"multi\nline","a\nb",\r\n')


def test_merging_as_a1111():
    assert merge("cinematic still of {prompt}, grain", "a cat") == "cinematic still of a cat, grain"
    assert merge("sharp, detailed", "a cat ") == "a cat, sharp, detailed"
    assert merge("sharp", "") == "sharp" and merge("", "a cat") == "a cat"
    assert apply("a cat", ["{prompt}, one", "two"]) == "a cat, one, two"
    assert apply("a cat", ["two", "{prompt}, one"]) == "a cat, two, one"


def test_reads_a1111s_file(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(A1111_FILE.encode("utf-8"))
    store = StyleStore(path)
    assert store.names() == ["cinematic", "sharp", "multi\nline"]
    assert store.get("cinematic") == PromptStyle("cinematic", "cinematic still of {prompt}, film grain", "cartoon, drawing")
    assert store.get("sharp").negative_prompt == "blurry"
    old = tmp_path / "old.csv"
    old.write_text("name,text\nx,old style text\n", encoding="utf-8")
    assert StyleStore(old).get("x").prompt == "old style text"  # A1111's first format
    assert StyleStore(tmp_path / "missing.csv").list() == []


def test_writes_a1111s_format_atomically_and_sees_changes_on_disk(tmp_path):
    path = tmp_path / "styles.csv"
    store = StyleStore(path)
    store.save(PromptStyle("noir", "{prompt}, film noir, \"quoted\"", "color"))
    store.save(PromptStyle("x", "a,\nb"))
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")  # UTF-8 with BOM, header first
    assert StyleStore(path).get("noir").prompt == '{prompt}, film noir, "quoted"'
    assert StyleStore(path).get("x").prompt == "a,\nb"
    store.save(PromptStyle("noir", "replaced"))
    assert [s.prompt for s in StyleStore(path).list()] == ["replaced", "a,\nb"]
    store.delete("x")
    assert StyleStore(path).names() == ["noir"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporaries left
    path.write_bytes(A1111_FILE.encode("utf-8"))  # edited by hand: read again
    assert "cinematic" in store.names()
    for bad in ("", "  ", "#hidden", "a\nb", "x" * 300):
        with pytest.raises(InvalidRequest) as err:
            store.save(PromptStyle(bad, "p"))
        assert err.value.field == "name"


def test_a_file_that_cannot_be_read_is_never_overwritten(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(b"\xff\xfe not utf-8 \x00")
    store = StyleStore(path)
    assert store.list() == [] and "could not be read" in store.error
    with pytest.raises(InvalidRequest) as err:
        store.save(PromptStyle("a", "b"))
    assert err.value.field == "styles"
    assert path.read_bytes() == b"\xff\xfe not utf-8 \x00"
    with pytest.raises(InvalidRequest) as err:
        store.resolve(["a"])
    assert "could not be read" in err.value.message


def test_concurrent_saves_keep_every_style(tmp_path):
    store = StyleStore(tmp_path / "styles.csv")
    threads = [threading.Thread(target=store.save, args=(PromptStyle(f"s{i}", f"p{i}"),)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(StyleStore(tmp_path / "styles.csv").names()) == sorted(f"s{i}" for i in range(16))


def test_styles_are_taken_back_out_of_an_infotext(tmp_path):
    """A1111's extract_style_text_from_prompt examples, and its order (the last applied is found first)."""
    store = StyleStore(tmp_path / "styles.csv")
    store.save(PromptStyle("master", "masterpiece"))
    store.save(PromptStyle("wrap", "masterpiece, {prompt}"))
    store.save(PromptStyle("neg", "", "blurry"))
    assert store.take_out("1girl, art by greg, masterpiece", "") == (["master"], "1girl, art by greg", "")
    assert store.take_out("masterpiece, 1girl, art by greg", "") == (["wrap"], "1girl, art by greg", "")
    assert store.take_out("exquisite, 1girl", "") == ([], "exquisite, 1girl", "")
    styled = StyledPrompts.of(Txt2ImgRequest(prompt="a cat", negative_prompt="ugly"),
                              [store.get("master"), store.get("neg")])
    assert (styled.prompt, styled.negative_prompt) == ("a cat, masterpiece", "ugly, blurry")
    # A1111 searches in file order and lists what it found last first; applied again, the same texts
    assert store.take_out(styled.prompt, styled.negative_prompt) == (["neg", "master"], "a cat", "ugly")
    parsed = infotext.parse_with_styles("a cat, masterpiece\nNegative prompt: ugly, blurry\nSteps: 4, Seed: 1, Size: 64x64",
                                        store)
    assert parsed["Styles array"] == ["neg", "master"] and parsed["Prompt"] == "a cat"
    fields = infotext.to_request_fields(parsed)
    again = StyledPrompts.of(Txt2ImgRequest(**fields), [store.get(n) for n in fields["styles"]])
    assert (again.prompt, again.negative_prompt) == (styled.prompt, styled.negative_prompt)


def test_jobs_apply_styles_and_record_the_styled_prompt(studio):
    studio.styles.save(PromptStyle("moody", "dark, {prompt}, rain", "sunny"))
    base = dict(steps=3, width=64, height=64, seed=9, save_images=False)
    job = studio.jobs.run("txt2img", Txt2ImgRequest(prompt="a red cat", negative_prompt="ugly", styles=["moody"], **base),
                          timeout=120)
    assert job.state == JobState.DONE, job.error
    same = studio.jobs.run("txt2img", Txt2ImgRequest(prompt="dark, a red cat, rain", negative_prompt="ugly, sunny", **base),
                           timeout=120)
    styled, plain = job.result.images[0], same.result.images[0]
    assert np.array_equal(np.asarray(styled.image), np.asarray(plain.image))
    assert styled.infotext == plain.infotext  # A1111 writes the prompts with the styles in them
    info = job.result.info
    assert info["prompt"] == "a red cat" and info["all_prompts"] == ["dark, a red cat, rain"]
    assert info["styles"] == ["moody"] and info["all_negative_prompts"] == ["ugly, sunny"]
    pending = len(studio.jobs._jobs)
    with pytest.raises(InvalidRequest) as err:
        studio.submit("txt2img", Txt2ImgRequest(prompt="x", styles=["moody", "no such style"], **base))
    assert err.value.field == "styles" and "no such style" in err.value.message and "moody" in err.value.message
    assert len(studio.jobs._jobs) == pending
