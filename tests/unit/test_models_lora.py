"""LoRAs on the demo architecture: kohya/A1111 and diffusers/PEFT files change the image at weight 1,
leave it bit-identical at weight 0 and after removal, scale by 1.0 without .alpha, and a LoRA
that cannot apply is refused by name — never a silent no-op."""
from __future__ import annotations

import numpy as np
import pytest

from modules.errors import InvalidRequest


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    import torch
    from safetensors.torch import save_file

    from tests.fixtures_models import save_demo_lora
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("lora-data"), demo_checkpoint)
    loras = data / "models" / "Lora"
    save_demo_lora(loras / "kohya.safetensors", "kohya", seed=1, alpha=4.0, rank=4)
    save_demo_lora(loras / "sub" / "peft-style.safetensors", "peft", seed=2)
    save_demo_lora(loras / "noalpha.safetensors", "kohya", seed=3, alpha=None, rank=4)
    save_demo_lora(loras / "alpharank.safetensors", "kohya", seed=3, alpha=4.0, rank=4)  # same tensors + alpha=rank
    save_demo_lora(loras / "xl-style.safetensors", "kohya", seed=4, metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    save_file({"lora_unet_no_such_block_to_q.lora_down.weight": torch.randn(4, 32),
               "lora_unet_no_such_block_to_q.lora_up.weight": torch.randn(32, 4)}, str(loras / "nomatch.safetensors"))
    save_file({"this.is.not.a.lora": torch.randn(4, 4)}, str(loras / "garbage.safetensors"))
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _image(studio, loras=()):
    import torch

    with studio.models.checkpoint(None) as ckpt, studio.models.loras(ckpt, list(loras)) as applied:
        out = ckpt.pipe(prompt="a red cat", num_inference_steps=3, height=64, width=64, output_type="np",
                        generator=torch.Generator().manual_seed(7)).images
    return out, applied


@pytest.mark.parametrize("name", ["kohya", "sub/peft-style"])
def test_lora_changes_output_at_weight_one_and_is_exact_at_zero_and_after_removal(studio, name):
    base, _ = _image(studio)
    on, applied = _image(studio, [(name, 1.0)])
    assert np.abs(on - base).max() > 1e-3, "the LoRA did nothing at weight 1"
    assert [a.weight for a in applied] == [1.0] and applied[0].entry.short_hash
    half, _ = _image(studio, [(name, 0.5)])
    assert not np.array_equal(half, base) and not np.array_equal(half, on), "a weight of 0.5 is neither base nor full"
    zero, _ = _image(studio, [(name, 0.0)])
    assert np.array_equal(zero, base), "weight 0 must give the base image bit for bit"
    after, _ = _image(studio)
    assert np.array_equal(after, base), "removing the LoRA must restore the base image bit for bit"


def test_changing_loras_never_reloads_the_checkpoint(studio):
    with studio.models.checkpoint(None) as ckpt:
        pipe = ckpt.pipe
    _image(studio, [("kohya", 1.0), ("sub/peft-style", 0.7)])
    _image(studio, [("kohya", 0.3)])
    with studio.models.checkpoint(None) as ckpt:
        assert ckpt.pipe is pipe


def test_kohya_lora_without_alpha_scales_by_one(studio):
    no_alpha, _ = _image(studio, [("noalpha", 1.0)])
    alpha_rank, _ = _image(studio, [("alpharank", 1.0)])  # alpha = rank: scale 1.0
    base, _ = _image(studio)
    assert np.abs(no_alpha - base).max() > 1e-3
    np.testing.assert_allclose(no_alpha, alpha_rank, atol=1e-6)


@pytest.mark.parametrize("name,words", [
    ("nomatch", "no keys that match"),
    ("garbage", "LoRA"),
    ("xl-style", "is for SDXL"),
    ("not-there", "no lora named"),
])
def test_lora_that_cannot_apply_is_refused_by_name(studio, name, words):
    base, _ = _image(studio)
    with pytest.raises(InvalidRequest) as info:
        _image(studio, [(name, 1.0)])
    assert info.value.field == "prompt"
    assert name in info.value.message and words in info.value.message, info.value.message
    after, _ = _image(studio)
    assert np.array_equal(after, base), "a refused LoRA left something behind"


def test_prompt_lora_through_a_job_records_lora_hashes(studio):
    from modules.diffusion.params import Txt2ImgRequest

    req = Txt2ImgRequest(prompt="a cat <lora:kohya:0.8>", steps=2, width=64, height=64, seed=3, save_images=False)
    job = studio.jobs.run("txt2img", req, timeout=120)
    job.raise_for_error()
    entry = studio.registry.get("lora", "kohya")
    assert f'Lora hashes: "kohya: {entry.short_hash}"' in job.result.images[0].infotext


def test_lora_arch_from_metadata_and_keys(studio):
    studio.registry.refresh("lora")
    assert studio.registry.get("lora", "xl-style").arch == "sdxl"
    assert studio.registry.get("lora", "kohya").arch is None  # the demo's 32-wide layers claim no real arch


def test_kohya_sdxl_lora_applies_to_sdxl_and_is_refused_on_sd1(studio):
    import torch

    from tests.fixtures_models import save_demo_sdxl_checkpoint, save_demo_sdxl_lora

    save_demo_sdxl_checkpoint(studio.paths.model_dir("checkpoint") / "tiny-xl")
    save_demo_sdxl_lora(studio.paths.model_dir("lora") / "xl-kohya.safetensors")
    studio.registry.refresh()
    assert studio.registry.get("lora", "xl-kohya").arch == "sdxl"  # from its lora_te1_/lora_te2_ keys

    def xl(loras=()):
        with studio.models.checkpoint("tiny-xl") as ckpt, studio.models.loras(ckpt, list(loras)):
            return ckpt.pipe(prompt="a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                             generator=torch.Generator().manual_seed(1)).images

    base = xl()
    assert np.abs(xl([("xl-kohya", 1.0)]) - base).max() > 1e-3
    assert np.array_equal(xl(), base)
    with pytest.raises(InvalidRequest, match="xl-kohya.*SDXL"):
        _image(studio, [("xl-kohya", 1.0)])


def test_active_loras_are_fused_for_the_job_and_match_plain_diffusers_unfused_adapters(studio, demo_checkpoint):
    """Fused (no per-step adapter cost) and the same image as diffusers' own unfused adapters."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    fused, _ = _image(studio, [("kohya", 0.8)])
    with studio.models.checkpoint(None) as ckpt:
        layers = [m for m in ckpt.pipe.unet.modules() if isinstance(m, BaseTunerLayer) and m.merged_adapters]
        assert layers and ckpt.loras.fused, "the active LoRA is fused into the UNet's weights"
    plain = StableDiffusionPipeline.from_pretrained(str(demo_checkpoint), safety_checker=None,
                                                    requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    plain.load_lora_weights(str(studio.paths.model_dir("lora") / "kohya.safetensors"), adapter_name="k")
    plain.set_adapters(["k"], adapter_weights=[0.8])
    reference = plain(prompt="a red cat", num_inference_steps=3, height=64, width=64, output_type="np",
                      generator=torch.Generator().manual_seed(7)).images
    assert np.abs(fused - reference).max() < 2e-3, "fusing changes the image beyond rounding"


def test_switching_fused_sets_restores_the_base_weights_exactly(studio):
    base, _ = _image(studio)
    with studio.models.checkpoint(None) as ckpt:
        before = {k: v.clone() for k, v in ckpt.pipe.unet.state_dict().items() if "lora" not in k}
    for wanted in ([("kohya", 1.0)], [("kohya", 0.3), ("sub/peft-style", 0.7)], [("sub/peft-style", 0.7)], []):
        _image(studio, wanted)
    with studio.models.checkpoint(None) as ckpt:
        after = {k: v for k, v in ckpt.pipe.unet.state_dict().items() if "lora" not in k}
        assert not ckpt.loras.fused and all(torch_equal(before[k], after[k]) for k in before)
    again, _ = _image(studio)
    assert np.array_equal(again, base)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_coming_back_to_the_last_fused_set_swaps_its_kept_tensors_and_gives_the_same_image(studio):
    """Jobs alternating a LoRA on and off: the second time the fused weights are the kept ones (no new
    computation), the image is the first fused image, and the base between them is the base bit for bit."""
    base, _ = _image(studio)
    on, _ = _image(studio, [("kohya", 0.9)])
    with studio.models.checkpoint(None) as ckpt:
        fused_ptrs = {m: m.get_base_layer().weight.data.data_ptr() for m in ckpt.loras.backup}
    assert np.array_equal(_image(studio)[0], base)
    with studio.models.checkpoint(None) as ckpt:
        assert not ckpt.loras.fused and ckpt.loras.kept, "the fused tensors of the last set are kept after a restore"
    again, _ = _image(studio, [("kohya", 0.9)])
    with studio.models.checkpoint(None) as ckpt:
        assert {m: m.get_base_layer().weight.data.data_ptr() for m in ckpt.loras.backup} == fused_ptrs, \
            "coming back to the same set should reuse its kept fused tensors"
    assert fused_ptrs and np.array_equal(again, on)
    other, _ = _image(studio, [("kohya", 0.4)])
    assert not np.array_equal(other, on), "another weight must be fused anew, not taken from the kept set"
    assert np.array_equal(_image(studio)[0], base)


def test_weight_changes_add_the_difference_in_place_and_stay_near_a_fresh_fuse_and_exact_after_removal(studio):
    """Only the weight changing: the fused tensors change in place (the same storage, no restore + new fuse),
    every MAX_DELTA_STEPS changes re-fused from the base; each image within 1e-4 of a fresh fuse at that
    weight, the fused weights within 1e-5 of W + w·s·B·A, and removal after
    them the base bit for bit."""
    import torch

    from modules.models.lora import MAX_DELTA_STEPS

    base, _ = _image(studio)
    sequence = [1.0, 0.5, 0.8, 0.3, 1.2, 0.6, 0.9, 0.4, 0.7, 1.1, 0.5, 0.8]
    assert len(sequence) > MAX_DELTA_STEPS + 2
    fresh = {}
    for w in sorted(set(sequence)):  # from another set: a new fuse from the base at w
        _image(studio, [("sub/peft-style", 1.0)])
        fresh[w], _ = _image(studio, [("kohya", w)])
    assert np.array_equal(_image(studio)[0], base)
    with studio.models.checkpoint(None) as ckpt:  # both adapters loaded: the layers' key names are final
        before = {k: v.clone() for k, v in ckpt.pipe.unet.state_dict().items() if "lora" not in k}
    ptrs, images = [], []
    for w in sequence:
        img, _ = _image(studio, [("kohya", w)])
        images.append(img)
        with studio.models.checkpoint(None) as ckpt:
            state = ckpt.loras
            ptrs.append({m: m.get_base_layer().weight.data_ptr() for m in state.backup})
            for module, original in state.backup.items():  # the fused weight is the base plus w's delta
                expected = original.clone()
                for name, _ in state.fused:
                    if name in module.lora_A:
                        expected += module.get_delta_weight(name)
                assert torch.allclose(module.get_base_layer().weight, expected, atol=1e-5)
        np.testing.assert_allclose(img, fresh[w], atol=1e-4, err_msg=f"weight {w} drifted from a fresh fuse")
        assert not np.array_equal(img, base)
    # Changes 1..MAX_DELTA_STEPS were in place; the next one re-fused from the base (new tensors), then in place.
    for i in range(1, len(sequence)):
        in_place = ptrs[i] == ptrs[i - 1]
        assert in_place == (i != MAX_DELTA_STEPS + 1), f"change {i}: in place {in_place}"
    assert np.array_equal(_image(studio)[0], base), "removal after weight changes must give the base bit for bit"
    with studio.models.checkpoint(None) as ckpt:
        after = {k: v for k, v in ckpt.pipe.unet.state_dict().items() if "lora" not in k}
        assert all(torch.equal(before[k], after[k]) for k in before), "a base tensor changed"
    # The kept set after the removal is the last weight's (changed in place): coming back to it is that image,
    # coming back to the first weight is computed anew, not taken from stale tensors.
    assert np.array_equal(_image(studio, [("kohya", sequence[-1])])[0], images[-1])
    _image(studio)
    again, _ = _image(studio, [("kohya", sequence[0])])
    np.testing.assert_allclose(again, fresh[sequence[0]], atol=1e-4)
    assert not np.array_equal(again, images[-1])
    assert np.array_equal(_image(studio, [("kohya", 0.0)])[0], base)
