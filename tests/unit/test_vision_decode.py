"""PaliGemma's detect / segment output decoded as big_vision does: hand-written strings with the
pixel boxes and mask shapes expected; the VQ-VAE decoder file; COCO RLE; the overlay."""
from __future__ import annotations

import numpy as np
import pytest

from modules.errors import InvalidRequest, ModelLoadError
from modules.vision import masks, parse, vqvae
from modules.vision.decode import objects_from_text

SEGS = "".join(f"<seg{c:03d}>" for c in (0, 5, 17, 127, 64, 3, 99, 100, 1, 2, 3, 4, 5, 6, 7, 8))


def loc(*bins: int) -> str:
    return "".join(f"<loc{b:04d}>" for b in bins)


def test_several_objects_scale_y_by_height_and_x_by_width():
    # A 200 x 100 image: x bins scale by 200, y bins by 100, separately (the processor squashed it square).
    text = f"{loc(256, 128, 768, 512)} cat ; {loc(0, 0, 1023, 1023)} dog ; {loc(512, 0, 1000, 100)} big dog"
    got = parse.parse_objects(text, width=200, height=100)
    assert got.invalid == 0
    assert [(o.label, o.box, o.bins) for o in got.objects] == [
        ("cat", (25, 25, 100, 75), (256, 128, 768, 512)),
        ("dog", (0, 0, 199, 99), (0, 0, 1023, 1023)),
        ("big dog", (0, 50, 19, 97), (512, 0, 1000, 100)),
    ]


def test_a_missing_label_is_the_one_object_asked_for_else_empty():
    text = f"{loc(100, 100, 200, 200)} ; {loc(300, 300, 400, 400)} cat"
    one = parse.parse_objects(text, 1024, 1024, default_label="cat")
    assert [o.label for o in one.objects] == ["cat", "cat"] and one.invalid == 0
    two = parse.parse_objects(text, 1024, 1024)
    assert [o.label for o in two.objects] == ["", "cat"]
    assert two.objects[0].box == (100, 100, 200, 200)


def test_out_of_range_and_incomplete_predictions_are_dropped_and_counted():
    text = (f"{loc(10, 10, 20, 20)} ok ; <loc1500>{loc(0, 100, 100)} far ; {loc(1, 2, 3)} short ; "
            f"<loc0100><loc0100><loc0200><loc9999> also far")
    got = parse.parse_objects(text, 1024, 1024)
    assert [o.label for o in got.objects] == ["ok"]
    assert got.invalid == 3


def test_boxes_with_y2_at_or_above_y1_or_x2_at_or_left_of_x1_are_invalid():
    text = f"{loc(500, 100, 400, 200)} upside ; {loc(100, 500, 200, 500)} flat ; {loc(100, 100, 200, 200)} fine"
    got = parse.parse_objects(text, 640, 480)
    assert [o.label for o in got.objects] == ["fine"] and got.invalid == 2
    # Thinner than a pixel of this image once truncated to pixels: invalid too (big_vision's int() check).
    sliver = parse.parse_objects(f"{loc(0, 0, 50, 50)} tiny", 10, 10)
    assert sliver.objects == [] and sliver.invalid == 1


def test_text_without_locations_gives_no_objects_and_no_crash():
    for text in ("", "a cat on a mat", ";;;", "<seg001><seg002> cat", "<loc>"):
        got = parse.parse_objects(text, 64, 64)
        assert got.objects == [] and got.invalid == 0, text


def test_segmentation_needs_16_codes_in_range():
    ok = f"{loc(0, 0, 512, 512)}{SEGS} cat"
    few = f"{loc(0, 0, 512, 512)}{SEGS[:-8]} cat"
    bad = f"{loc(0, 0, 512, 512)}{SEGS[:-8]}<seg200> cat"
    got = parse.parse_objects(" ; ".join([ok, few, bad]), 128, 64, segment=True)
    assert len(got.objects) == 1 and got.invalid == 2
    assert got.objects[0].codes == (0, 5, 17, 127, 64, 3, 99, 100, 1, 2, 3, 4, 5, 6, 7, 8)
    assert got.objects[0].box == (0, 0, 64, 32)


@pytest.fixture
def decoder(tmp_path):
    return vqvae.MaskDecoder(vqvae.write_random_decoder(tmp_path / vqvae.FILE_NAME, embedding_dim=32, seed=1))


@pytest.fixture
def positive_decoder(tmp_path):
    """Random weights whose last bias makes every pixel of every map positive: a mask is its whole box."""
    path = vqvae.write_random_decoder(tmp_path / "positive.npz", embedding_dim=32, seed=2)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["decoder.12.bias"] = np.array([1000.0], np.float32)
    np.savez(path, **arrays)
    return vqvae.MaskDecoder(path)


def test_a_segmentation_of_16_codes_becomes_a_full_size_mask_inside_its_box(positive_decoder):
    text = f"{loc(256, 512, 768, 1023)}{SEGS} cat ; {loc(0, 0, 1023, 256)}{SEGS} dog"
    objects, invalid = objects_from_text(text, 160, 120, segment=True, asked=["cat", "dog"],
                                         decoder=positive_decoder)
    assert invalid == 0 and [o.label for o in objects] == ["cat", "dog"]
    cat, dog = objects
    assert cat.box == [80, 30, 159, 90] and dog.box == [0, 0, 40, 119]
    for obj in objects:
        assert obj.mask.shape == (120, 160) and obj.mask.dtype == bool
        x1, y1, x2, y2 = obj.box
        outside = obj.mask.copy()
        outside[y1:y2, x1:x2] = False
        assert not outside.any(), "a mask must stay inside its box"
        assert obj.mask[y1:y2, x1:x2].all(), "a map positive everywhere fills its box"
    rle = cat.to_json()["mask"]
    assert rle["size"] == [120, 160] and isinstance(rle["counts"], str)
    assert (masks.decode_rle(rle) == cat.mask).all()


def test_paste_resizes_the_64x64_map_into_the_box_and_thresholds_at_zero():
    map64 = -np.ones((64, 64), np.float32)
    map64[:, :32] = 1.0  # the left half is the object
    mask = masks.paste(map64, (10, 20, 50, 40), width=60, height=50)
    assert mask.shape == (50, 60)
    assert mask[20:40, 10:29].all() and not mask[20:40, 31:50].any()
    assert mask.sum() == 20 * 20


def test_decoder_turns_codes_into_64x64_maps_and_reads_the_files_keys(decoder, tmp_path):
    maps = decoder.decode(np.array([[1] * 16, list(range(16)), [127] * 16]))
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert not np.allclose(maps[0], maps[1]), "different codes must decode differently"
    with np.load(tmp_path / vqvae.FILE_NAME) as npz:
        keys = set(npz.files)
    # big_vision's key names (evaluators/proj/paligemma/transfers/segmentation.py)
    assert {"_vq_vae._embedding", "decoder.0.weight", "decoder.2.net.0.weight", "decoder.2.net.4.bias",
            "decoder.3.net.2.weight", "decoder.4.weight", "decoder.6.weight", "decoder.8.weight",
            "decoder.10.weight", "decoder.12.weight", "decoder.12.bias"} <= keys
    with np.load(tmp_path / vqvae.FILE_NAME) as npz:
        assert npz["_vq_vae._embedding"].shape == (128, 32)
        assert npz["decoder.0.weight"].shape == (128, 32, 1, 1)
        assert npz["decoder.4.weight"].shape == (128, 128, 4, 4)  # ConvTranspose2d: (in, out, kh, kw)
        assert npz["decoder.10.weight"].shape == (32, 16, 4, 4)
        assert npz["decoder.12.weight"].shape == (1, 16, 1, 1)
    assert decoder.demo
    with pytest.raises(InvalidRequest):
        decoder.decode(np.array([[128] * 16]))


def test_decoder_file_missing_or_foreign_is_refused_with_the_file_and_the_folder(tmp_path):
    cache = vqvae.DecoderCache()
    with pytest.raises(InvalidRequest) as missing:
        cache.get(tmp_path / "VLM" / vqvae.FILE_NAME)
    assert missing.value.field == "task"
    assert vqvae.FILE_NAME in missing.value.message and "models/VLM" in missing.value.message
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, something=np.zeros(3))
    with pytest.raises(ModelLoadError, match="_vq_vae._embedding"):
        vqvae.MaskDecoder(foreign)
    not_npz = tmp_path / "broken.npz"
    not_npz.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a readable"):
        vqvae.MaskDecoder(not_npz)


def test_bins_of_pixel_boxes_round_trip_for_other_detectors():
    bins = parse.to_bins((25, 25, 100, 75), 200, 100)
    assert bins == [256, 128, 768, 512]
    assert parse.to_pixels(tuple(bins), 200, 100) == (25, 25, 100, 75)


def test_overlay_has_the_images_size_and_colours_masks_and_boxes():
    from PIL import Image

    from modules.vision import overlay
    from modules.vision.results import VisionObject

    image = Image.new("RGB", (120, 90), (0, 0, 0))
    mask = np.zeros((90, 120), bool)
    mask[50:80, 60:100] = True
    objects = [VisionObject("cat", [10, 10, 50, 40], [0, 0, 0, 0], 0.9),
               VisionObject("dog", [60, 50, 100, 80], [0, 0, 0, 0], None, mask),
               VisionObject("person", [0, 0, 120, 90], None, 0.5, None, [[30, 30, 0.9], [40, 40, 0.1]])]
    out = overlay.draw(image, objects)
    assert out.size == image.size and out.mode == "RGB"
    assert out.getpixel((80, 65)) != (0, 0, 0), "the mask is drawn, translucent"
    assert out.getpixel((80, 65)) != overlay.colour("dog"), "… and the image shows through it"
    assert out.getpixel((30, 30)) == (255, 255, 255), "a confident keypoint is drawn"
    assert out.getpixel((40, 40)) == (0, 0, 0), "an unsure one is not"
    assert out.getpixel((49, 25)) == overlay.colour("cat"), "the box edge has its class colour"
    hidden = overlay.draw(image, objects, hidden={1})
    assert hidden.getpixel((80, 65)) == (0, 0, 0), "a hidden object is not drawn"
    assert overlay.colour("cat") == overlay.colour("cat")
