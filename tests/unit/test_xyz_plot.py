"""The X/Y/Z plot: A1111's script_args and axis indices, value syntax, cell order (checkpoints outermost),
one job with progress over every cell, a labelled grid with its infotext, interrupt keeping what is done."""
import threading

import numpy as np
import pytest

from modules.diffusion import infotext, xyz
from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
from modules.diffusion.xyz_axes import axes_for, find_axis, parse_values
from modules.errors import InvalidRequest
from modules.jobs import JobState


def args(x_type=1, x_values="", y_type=0, y_values="", z_type=0, z_values="", **kw):
    """A1111 1.7+'s 18 script_args."""
    named = dict(xyz.DEFAULTS, x_type=x_type, x_values=x_values, y_type=y_type, y_values=y_values, z_type=z_type,
                 z_values=z_values, **kw)
    return [named[name] for name in xyz.ARGS]


def req(script_args, **kw):
    base = dict(prompt="a red cat", steps=3, width=64, height=64, seed=7, save_images=False, sampler_name="Euler")
    return Txt2ImgRequest(**{**base, **kw}, script_name="X/Y/Z plot", script_args=script_args)


def test_a1111_indices_and_labels():
    txt = [a.label for a in axes_for("txt2img")]
    # A1111 1.10's txt2img list: the indices scripts send
    assert txt[:12] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale",
                        "Prompt S/R", "Prompt order", "Sampler", "Hires sampler", "Checkpoint name"]
    assert txt.index("Schedule type") == 17 and txt.index("Denoising") == 26 and txt.index("Size") == 42
    img = [a.label for a in axes_for("img2img")]
    assert img[:10] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale",
                        "Prompt S/R", "Prompt order", "Sampler"]
    assert find_axis("txt2img", "steps").label == "Steps" and find_axis("txt2img", "4").label == "Steps"
    assert txt[-2:] == ["LoRA weight", "Hires upscale"]  # Atelier's own come after A1111's


def test_value_syntax():
    steps = find_axis("txt2img", "Steps")
    assert parse_values(steps, "10, 20,30", [], False) == [10, 20, 30]
    assert parse_values(steps, "1-5", [], False) == [1, 2, 3, 4, 5]
    assert parse_values(steps, "1-10 (+3)", [], False) == [1, 4, 7, 10]
    assert parse_values(steps, "10-20 [3]", [], False) == [10, 15, 20]
    cfg = find_axis("txt2img", "CFG Scale")
    assert parse_values(cfg, "1.5-3 (+0.5)", [], False) == [1.5, 2.0, 2.5, 3.0]
    assert parse_values(cfg, "0-1 [5]", [], False) == [0.0, 0.25, 0.5, 0.75, 1.0]
    sampler = find_axis("txt2img", "Sampler")
    assert parse_values(sampler, "", ["Euler", "DDIM"], False) == ["Euler", "DDIM"]  # the dropdown, A1111's way
    assert parse_values(sampler, "Euler, DDIM", [], True) == ["Euler", "DDIM"]
    assert parse_values(find_axis("txt2img", "Prompt S/R"), '"red, cat",blue', [], False) == ["red, cat", "blue"]
    assert len(parse_values(find_axis("txt2img", "Prompt order"), "a, b, c", [], False)) == 6
    with pytest.raises(ValueError):
        parse_values(steps, "ten", [], False)


def test_cells_are_checked_when_the_request_is_made():
    plot = xyz.plan(req(args(4, "2, 3", 7, "red, blue, green")))
    assert plot.shape == (2, 3, 1) and len(plot.cells) == 6
    assert [c.request.steps for c in plot.cells[:2]] == [2, 3]
    assert plot.cells[2].request.prompt == "a blue cat" and plot.cells[4].request.prompt == "a green cat"
    cases = [
        (args(4, "2, 500"), "script_args", "steps"),  # out of range in one cell
        (args(7, "dog, cat"), "script_args", "did not find"),  # Prompt S/R's first value must be in the prompt
        (args(13, "1, 2"), "script_args[0]", "Sigma Churn"),  # an axis Atelier cannot honour is refused by name
        (args("Warp factor", "1"), "script_args[0]", "no axis"),
        (args(4, "x"), "script_args[1]", "not a whole number"),
        (args(4, "1", draw_legend="yes"), "script_args[9]", "true or false"),
        (args(4, "1") + [1, 2], "script_args", "takes 18"),
    ]
    for script_args, field, words in cases:
        with pytest.raises(InvalidRequest) as err:
            req(script_args)
        assert err.value.field == field and words in err.value.message, (script_args, err.value)
    with pytest.raises(InvalidRequest) as err:
        Txt2ImgRequest(prompt="x", script_name="Loopback")
    assert err.value.field == "script_name"
    with pytest.raises(InvalidRequest) as err:
        Txt2ImgRequest(prompt="x", script_args=[1, 2])
    assert err.value.field == "script_args"


def test_seeds_fixed_varied_or_kept():
    plot = xyz.plan(req(args(4, "2, 3"), seed=-1))
    assert len({c.request.seed for c in plot.cells}) == 1 and plot.cells[0].request.seed != -1  # A1111's fix_seed
    varied = xyz.plan(req(args(4, "2, 3", 6, "5, 7", vary_seeds_x=True, vary_seeds_y=True), seed=100))
    assert sorted(c.request.seed for c in varied.cells) == [100, 101, 102, 103]
    keep = xyz.plan(req(args(4, "2, 3", no_fixed_seeds=True), seed=-1))
    assert {c.request.seed for c in keep.cells} == {-1}
    seed_axis = xyz.plan(req(args(1, "-1, 5")))
    assert seed_axis.cells[0].request.seed != -1 and seed_axis.cells[1].request.seed == 5


def test_the_checkpoint_axis_changes_least_often():
    plot = xyz.plan(req(args(11, "a, b", 4, "2, 3")))  # x: Checkpoint name (cost 1), y: Steps
    order = [(c.request.checkpoint_override, c.request.steps) for c in plot.cells]
    assert order == [("a", 2), ("a", 3), ("b", 2), ("b", 3)]
    plain = xyz.plan(req(args(4, "2, 3", 6, "5, 7")))  # no costly axis: z, then y, then x (x fastest)
    assert [(c.request.cfg_scale, c.request.steps) for c in plain.cells] == [(5, 2), (5, 3), (7, 2), (7, 3)]


def test_a_plot_is_one_job_with_a_labelled_grid(studio):
    job = studio.submit("txt2img", req(args(4, "2, 3", 6, "4, 9"), save_images=True))
    fractions = []

    def watch():
        version = -1
        while not job.state.finished:
            version = job.wait_for_change(version, 1.0)
            fractions.append(job.progress.fraction)

    watcher = threading.Thread(target=watch)
    watcher.start()
    job.wait(300)
    watcher.join(10)
    assert job.state == JobState.DONE, job.error
    assert job.progress.parts == 4 and job.progress.part == 3
    assert fractions == sorted(fractions) and max(fractions) > 0.5  # one progress over all the cells
    images = job.result.images
    assert len(images) == 1  # the grid (Include Sub Images is off)
    grid = images[0]
    assert grid.image.width > 2 * 64 and grid.image.height > 2 * 64  # cells plus the legends
    text = infotext.parse(grid.infotext)
    assert text["Script"] == "X/Y/Z plot" and text["X Type"] == "Steps" and text["X Values"] == "2, 3"
    assert text["Y Type"] == "CFG Scale" and text["Steps"] == "2"
    assert grid.path is not None and "txt2img-grids" in str(grid.path)
    saved_cells = sorted((studio.paths.outputs / "txt2img-images").rglob("*.png"))
    assert len(saved_cells) >= 4
    # the cell at (steps 3, cfg 9) is the same picture as that request alone
    alone = studio.jobs.run("txt2img", Txt2ImgRequest(prompt="a red cat", steps=3, cfg_scale=9, width=64, height=64,
                                                      seed=7, sampler_name="Euler", save_images=False), timeout=120)
    cells = studio.submit("txt2img", req(args(4, "2, 3", 6, "4, 9", include_lone_images=True))).wait(300)
    assert len(cells.result.images) == 5 and cells.result.info["infotexts"][0] == cells.result.images[0].infotext
    assert np.array_equal(np.asarray(cells.result.images[4].image), np.asarray(alone.result.images[0].image))


def test_interrupt_keeps_the_cells_that_are_done(studio):
    job = studio.submit("txt2img", req(args(4, "30, 30, 30")))
    while job.progress.part < 1 and not job.state.finished:
        job.wait_for_change(-1, 0.05)
    studio.jobs.interrupt(job.id)
    job.wait(300)
    assert job.state == JobState.INTERRUPTED
    assert len(job.result.images) == 1 and job.result.interrupted  # a grid of what was made
    assert job.progress.part < 3


def test_img2img_plot_over_denoising(studio):
    from PIL import Image

    init = Image.new("RGB", (64, 64), (30, 160, 90))
    r = Img2ImgRequest(prompt="moss", init_images=[init], steps=4, width=64, height=64, seed=3, save_images=False,
                       script_name="x/y/z plot", script_args=args("Denoising", "0.3, 0.6"))
    job = studio.jobs.run("img2img", r, timeout=300)
    assert job.state == JobState.DONE, job.error
    assert infotext.parse(job.result.images[0].infotext)["X Type"] == "Denoising"


def test_a_checkpoint_axis_loads_each_model_once(studio, caplog):
    """Checkpoint name on X, Steps on Y: the cells run model by model, so each is made resident once."""
    import logging

    from modules.models.demo import DEMO_NAME, save_demo_checkpoint

    save_demo_checkpoint(studio.paths.model_dir("checkpoint") / "other-model", seed=1)
    studio.registry.refresh("checkpoint")
    ran = []
    studio.hooks.add("before_generate", lambda r: ran.append(r.checkpoint_override) or r, owner="xyz-test")
    with caplog.at_level(logging.INFO, logger="atelier.models"):
        job = studio.jobs.run("txt2img", req(args("Checkpoint name", f"other-model, {DEMO_NAME}", "Steps", "2, 3, 4",
                                                  include_lone_images=True)), timeout=300)
    studio.hooks.remove_owner("xyz-test")
    assert job.state == JobState.DONE, job.error
    assert ran == ["other-model"] * 3 + [DEMO_NAME] * 3  # model by model: no switch back and forth
    switches = [r.getMessage() for r in caplog.records
                if " loaded on " in r.getMessage() or "moved from the RAM cache" in r.getMessage()]
    assert len([m for m in switches if "other-model" in m]) == 1, switches
    assert len([m for m in switches if DEMO_NAME in m]) <= 1, switches
    models = [infotext.parse(g.infotext)["Model"] for g in job.result.images[1:]]
    assert sorted(models) == ["atelier-demo-sd15"] * 3 + ["other-model"] * 3
    grid_text = infotext.parse(job.result.images[0].infotext)
    assert grid_text["X Type"] == "Checkpoint name" and grid_text["Model"] == "other-model"
