"""Face restoration (A1111's GFPGAN): OpenCV's Haar cascade finds a drawn face, a random-weight network in
GFPGANv1.4's own key layout (built once, fp16) restores it through the one model manager, and the face is
pasted back in the image's own size, pixels outside the faces untouched. Refusals name what to install."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import link_model
from tests.fixtures_models import schematic_face


def two_faces() -> Image.Image:
    """An 800x384 picture with two drawn faces of different sizes, far enough apart that their squares do not
    overlap, on a plain background."""
    image = Image.new("RGB", (800, 384), (30, 90, 40))
    image.paste(schematic_face(256), (40, 64))
    image.paste(schematic_face(200, background=(160, 110, 90)), (540, 100))
    return image


def test_the_cascade_finds_each_drawn_face_and_nothing_in_a_plain_image():
    from modules.postprocess.faces import crop_square, detect

    boxes = detect(two_faces())
    assert len(boxes) == 2
    (x1, y1, w1, _), (x2, y2, w2, _) = boxes  # largest first
    assert 40 < x1 < 140 and 64 < y1 < 160 and w1 > w2 and 540 < x2 < 640
    assert detect(Image.new("RGB", (320, 240), (128, 128, 128))) == []
    left, top, side = crop_square((760, 10, 60, 60), 800, 384)  # near the corner: moved inside
    assert side == 108 and left + side == 800 and top == 0


@pytest.fixture
def face_studio(data_dir, demo_gfpgan):
    from modules.studio import Studio, StudioOptions

    link_model(demo_gfpgan, data_dir / "models" / "GFPGAN")
    s = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def test_gfpgan_restores_the_faces_and_leaves_everything_else_untouched(face_studio):
    from modules.models import face_restorers
    from modules.postprocess.faces import crop_square, detect, restore_images

    assert face_restorers.installed(face_studio.registry) == ["GFPGAN"]
    source = two_faces()
    restored = restore_images(face_studio.models, "GFPGAN", [source], 1.0, "restore_faces")[0]
    assert restored.size == source.size
    before, after = np.asarray(source, dtype=np.int16), np.asarray(restored, dtype=np.int16)
    inside = np.zeros(before.shape[:2], bool)
    for box in detect(source):
        left, top, side = crop_square(box, *source.size)
        inside[top:top + side, left:left + side] = True
        margin = side // 5  # the middle of the square: the restored face at full visibility
        middle = (slice(top + margin, top + side - margin), slice(left + margin, left + side - margin))
        assert np.abs(after[middle] - before[middle]).mean() > 10  # the network's face replaced the drawn one
    assert np.array_equal(after[~inside], before[~inside])  # outside every face's square: the very same pixels
    assert inside.mean() < 0.9

    halfway = restore_images(face_studio.models, "GFPGAN", [source], 0.5, "gfpgan_visibility")[0]
    mixed = np.asarray(halfway, dtype=np.int16)
    # visibility 0.5: half the original, half the restored face (the same face again: the network's own noise)
    assert np.abs(mixed - (before + after) / 2).max() <= 1.0
    rows = {(r["kind"], r["name"]) for r in face_studio.models.describe() if r["location"] != "disk"}
    assert ("gfpgan", "GFPGANv1.4.safetensors") in rows  # the one model manager holds it


def test_extras_restores_faces_alone_keeping_the_size_with_a1111s_infotext(face_studio):
    from modules.postprocess.params import ExtrasRequest

    source = schematic_face(256)
    job = face_studio.submit("extras", ExtrasRequest(images=[source], upscaler_1="None", gfpgan_visibility=1.0,
                                                     save_images=False))
    job.wait(300)
    job.raise_for_error()
    done = job.result.images[0]
    assert done.image.size == (256, 256)
    assert done.infotext == "GFPGAN visibility: 1"
    assert np.abs(np.asarray(done.image, dtype=np.int16) - np.asarray(source, dtype=np.int16)).mean() > 5


def test_without_a_model_or_for_codeformer_the_refusal_names_what_to_install(data_dir):
    from modules.errors import InvalidRequest
    from modules.models import face_restorers
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths

    registry = ModelRegistry(DataPaths(data_dir))
    assert face_restorers.installed(registry) == []
    with pytest.raises(InvalidRequest) as missing:
        face_restorers.find(registry, "GFPGAN", "restore_faces")
    assert missing.value.field == "restore_faces"
    assert "GFPGANv1.4" in missing.value.message and str(data_dir / "models" / "GFPGAN") in missing.value.message
    with pytest.raises(InvalidRequest) as codeformer:
        face_restorers.find(registry, "CodeFormer", "restore_faces")
    assert "spandrel-extra-arches" in codeformer.value.message and "GFPGAN" in codeformer.value.message
