"""The studio generates an image end to end on the demo model, and saves it with infotext."""
from PIL import Image

from modules.diffusion.params import Txt2ImgRequest
from modules.jobs import JobState


def test_txt2img_job_saves_png_with_infotext(studio):
    job = studio.submit("txt2img", Txt2ImgRequest(prompt="a cat", steps=3, width=64, height=64, seed=7)).wait(120)
    assert job.state == JobState.DONE, job.error
    saved = job.result.images[0].path
    assert saved.exists() and saved.is_relative_to(studio.paths.outputs)
    with Image.open(saved) as im:
        assert im.size == (64, 64)
        assert "Seed: 7" in im.info["parameters"]
