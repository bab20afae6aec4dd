"""The studio generates images end to end on the demo model, and saves them with infotext."""
from PIL import Image

from modules.diffusion import infotext
from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
from modules.jobs import JobState


def test_txt2img_img2img_and_inpaint_jobs_save_pngs_with_infotext(studio):
    job = studio.submit("txt2img", Txt2ImgRequest(prompt="a cat", steps=3, width=64, height=64, seed=7)).wait(120)
    assert job.state == JobState.DONE, job.error
    saved = job.result.images[0].path
    assert saved.exists() and saved.is_relative_to(studio.paths.outputs)
    with Image.open(saved) as im:
        assert im.size == (64, 64)
        assert "Seed: 7" in im.info["parameters"]
        init = im.convert("RGB")
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    for extra in ({}, {"mask": mask}):
        job = studio.submit("img2img", Img2ImgRequest(init_images=[init], prompt="a dog", steps=3, width=64, height=64,
                                                      seed=8, denoising_strength=0.6, **extra)).wait(120)
        assert job.state == JobState.DONE, job.error
        path = job.result.images[0].path
        with Image.open(path) as im:
            parsed = infotext.parse(im.info["parameters"])
        assert parsed["Prompt"] == "a dog" and parsed["Denoising strength"] == "0.6" and parsed["Seed"] == "8"
        assert ("Mask blur" in parsed) == bool(extra)
